"""The stack's AWS identity, read from its aws:* config as the engine hands it over."""

from __future__ import annotations

import inspect
import json

import pulumi_aws as aws
import pytest

from inferstack.infra.aws_identity import AwsIdentity, identity, provider_settings
from inferstack.infra.errors import InvalidInput

ROLE = "arn:aws:iam::123456789012:role/deployer"
ACCEPTED = set(inspect.signature(aws.ProviderArgs.__init__).parameters) - {"self"}


def test_profile_and_role_become_get_token_arguments() -> None:
    config = {
        "aws:profile": "prod-admin",
        "aws:assumeRoles": json.dumps([{"roleArn": ROLE, "sessionName": "pulumi"}]),
    }
    assert identity(config) == AwsIdentity(profile="prod-admin", role_arn=ROLE)
    assert identity(config).get_token_args() == ["--role-arn", ROLE, "--profile", "prod-admin"]
    assert identity({"aws:region": "us-east-1"}).get_token_args() == []


@pytest.mark.parametrize(
    ("roles", "field"),
    [
        # A chain: get-token assumes one role from the base credentials, not the chain.
        ([{"roleArn": ROLE}, {"roleArn": ROLE + "-2"}], "aws:assumeRoles"),
        # get-token has no --external-id: the role belongs in an AWS CLI profile.
        ([{"roleArn": ROLE, "externalId": "x"}], "aws:assumeRoles[0].externalId"),
        ([{"sessionName": "s"}], "aws:assumeRoles[0].roleArn"),
        ({"roleArn": ROLE}, "aws:assumeRoles"),
    ],
)
def test_what_get_token_cannot_repeat_is_refused_by_key(roles: object, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        identity({"aws:assumeRoles": json.dumps(roles)})
    assert refused.value.field == field


def test_explicit_providers_get_every_setting_but_the_region() -> None:
    config = {
        "aws:region": "us-west-2",
        "aws:profile": "prod-admin",
        "aws:assumeRoles": json.dumps([{"roleArn": ROLE, "sessionName": "pulumi"}]),
        "aws:defaultTags": json.dumps({"tags": {"CostCenter": "ml", "team:owner": "serving"}}),
        "aws:allowedAccountIds": json.dumps(["123456789012"]),
        "aws:skipMetadataApiCheck": "false",
        "aws:maxRetries": "7",
        "inferstack:environment": "prod",
    }
    settings = provider_settings(config, ACCEPTED)
    assert settings == {
        "profile": "prod-admin",
        "assume_roles": [{"roleArn": ROLE, "sessionName": "pulumi"}],
        "default_tags": {"tags": {"CostCenter": "ml", "team:owner": "serving"}},
        "allowed_account_ids": ["123456789012"],
        "skip_metadata_api_check": False,
        "max_retries": 7,
    }
    aws.ProviderArgs(**settings)  # every one is a real provider argument


def test_a_setting_the_provider_does_not_take_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        provider_settings({"aws:assumeRole": json.dumps({"roleArn": ROLE})}, ACCEPTED)
    assert refused.value.field == "aws:assumeRole"
