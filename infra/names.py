"""What AWS allows in a resource name, counting the suffix Pulumi's auto-naming appends.

A resource whose physical name is not set is named ``<logical name>-<7 random characters>``: a
user-given name that reads fine can still push a derived IAM role name past AWS's 64 characters,
and `pulumi up` fails halfway. The components check every user-given name against the longest
name derived from it before registering anything.
"""

from __future__ import annotations

import re

from inferstack.infra.errors import InvalidInput

AUTONAME_SUFFIX = len("-") + 7
# AWS's own limits (botocore's service models where they state them; the tests compare).
IAM_ROLE_NAME_MAX = 64
S3_BUCKET_PREFIX_MAX = 37  # bucket_prefix: 63 minus the 26 characters S3 auto-naming appends
EKS_NODEGROUP_NAME_MAX = 63
LOG_GROUP_NAME_MAX = 512  # CloudWatch Logs: 1-512 of [.-_/#A-Za-z0-9]
_LOG_GROUP_NAME = re.compile(r"^[.\-_/#A-Za-z0-9]+$")
# The start of an S3 bucket name (lowercase letters, digits and '-'; no dots, which break TLS names).
_BUCKET_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]*-$")


def check_derived_name(field: str, value: str, *, suffix: str, limit: int, autonamed: bool = True) -> None:
    """``value + suffix`` (plus Pulumi's random suffix when ``autonamed``) fits in ``limit`` characters."""
    extra = len(suffix) + (AUTONAME_SUFFIX if autonamed else 0)
    if len(value) + extra > limit:
        raise InvalidInput(
            field,
            value,
            f"at most {limit - extra} characters: it names '{value}{suffix}"
            f"{'-xxxxxxx' if autonamed else ''}', which AWS caps at {limit}",
        )


def check_log_group_name(field: str, value: str, name: str) -> None:
    """``name``, a CloudWatch Logs group named after ``value``, is one AWS accepts."""
    if len(name) > LOG_GROUP_NAME_MAX or not _LOG_GROUP_NAME.match(name):
        raise InvalidInput(
            field,
            value,
            f"it names the log group '{name}': at most {LOG_GROUP_NAME_MAX} characters of "
            "letters, digits and . - _ / #",
        )


def check_bucket_prefix(field: str, value: str) -> None:
    """``value + '-'``, an S3 bucket prefix, is one S3 accepts and fits its length."""
    check_derived_name(field, value, suffix="-", limit=S3_BUCKET_PREFIX_MAX, autonamed=False)
    if not _BUCKET_PREFIX.match(f"{value}-") or "--" in value:
        raise InvalidInput(
            field,
            value,
            f"lowercase letters, digits and single '-' only, starting with a letter or digit: it names "
            f"the S3 bucket '{value}-<26 characters>'",
        )
