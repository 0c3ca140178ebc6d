"""The one AWS identity a stack deploys as, read from its ``aws:*`` config.

The stack's default AWS provider reads ``aws:profile``, ``aws:assumeRoles``, ``aws:defaultTags``,
``aws:allowedAccountIds`` and the rest; three other places must act as that same identity:

- the kubeconfig's ``aws eks get-token``, whose token EKS maps to the access entry the provider's
  identity was given (``--profile`` and ``--role-arn``, as pulumi-eks passes them; an ambient
  ``AWS_PROFILE`` or credentials would otherwise win and the API answers Unauthorized);
- the explicit providers of the failover stack (one per region), which read no stack config;
- ``inferstack preflight``, which asks AWS what the deploy will need.

Pure: it turns engine config (strings, objects as JSON text) into values; the callers make providers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from inferstack.infra.errors import InvalidInput

# Numbers among the provider's settings (the engine hands every value over as text).
_NUMBERS = frozenset({"max_retries", "token_bucket_rate_limiter_capacity"})


@dataclass(frozen=True)
class AwsIdentity:
    """Who the stack acts as on AWS: an AWS CLI profile, then a role assumed from it."""

    profile: str | None = None  # an AWS CLI profile (aws:profile)
    role_arn: str | None = None  # the role the provider assumes (aws:assumeRoles[0].roleArn)

    def get_token_args(self) -> list[str]:
        """What ``aws eks get-token`` needs besides the cluster and region to act as this identity."""
        args = ["--role-arn", self.role_arn] if self.role_arn else []
        return args + (["--profile", self.profile] if self.profile else [])


def _value(text: Any) -> Any:
    if isinstance(text, str) and (text[:1] in "[{" or text in ("true", "false")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def identity(config: Mapping[str, Any]) -> AwsIdentity:
    """The identity of a stack's ``aws:*`` settings, refusing what ``aws eks get-token`` cannot repeat."""
    roles = _value(config.get("aws:assumeRoles")) or []
    if not isinstance(roles, list) or not all(isinstance(r, dict) for r in roles):
        raise InvalidInput("aws:assumeRoles", roles, "a list of objects with a roleArn")
    if len(roles) > 1:
        raise InvalidInput(
            "aws:assumeRoles",
            [r.get("roleArn") for r in roles],
            "at most one role: the kubeconfig's `aws eks get-token --role-arn` assumes one role from the "
            "base credentials; for a chain, name an AWS CLI profile whose source_profile chains them "
            "(aws:profile)",
        )
    role = roles[0] if roles else {}
    unsupported = sorted(set(role) - {"roleArn", "sessionName", "duration"})
    if unsupported:
        raise InvalidInput(
            f"aws:assumeRoles[0].{unsupported[0]}",
            role[unsupported[0]],
            "roleArn, sessionName or duration only: `aws eks get-token` cannot pass the others; put the "
            "role in an AWS CLI profile (role_arn, external_id, source_profile) and name it in aws:profile",
        )
    if roles and not role.get("roleArn"):
        raise InvalidInput("aws:assumeRoles[0].roleArn", None, "the ARN of the role to assume")
    profile = config.get("aws:profile")
    return AwsIdentity(profile=str(profile) if profile else None, role_arn=role.get("roleArn"))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def provider_settings(config: Mapping[str, Any], accepted: Collection[str]) -> dict[str, Any]:
    """Every ``aws:*`` setting except the region, as keyword arguments of ``aws.Provider``.

    An explicit provider reads no stack config: without these, a failover stack's providers would
    run as the ambient identity, untagged and unguarded by ``allowedAccountIds``. ``accepted`` is the
    provider's parameter names; a key it does not take is refused, not dropped.
    """
    identity(config)  # the same refusals as the kubeconfig: one identity everywhere
    settings: dict[str, Any] = {}
    for key, text in sorted(config.items()):
        namespace, _, name = key.partition(":")
        if namespace != "aws" or name == "region":
            continue
        argument = _snake(name)
        if argument not in accepted:
            raise InvalidInput(key, text, f"a setting of the AWS provider: {', '.join(sorted(accepted))}")
        # Nested objects keep the engine's spelling (roleArn): the provider reads them as the default
        # provider reads the stack's config.
        value = _value(text)
        settings[argument] = int(value) if argument in _NUMBERS else value
    return settings
