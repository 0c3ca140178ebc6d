"""AWS name limits, counting Pulumi's auto-name suffix: every name a stack derives fits.

Mocks accept any name; AWS refuses a 65-character role name halfway through `pulumi up`. The limits
come from botocore's service models where they state them, and from the service docs where they
do not (EKS node group names, S3 bucket prefixes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.session
import pytest

from inferstack.infra.cluster import Cluster, ClusterArgs
from inferstack.infra.model_store import ModelStore
from inferstack.infra.names import (
    AUTONAME_SUFFIX,
    EKS_NODEGROUP_NAME_MAX,
    IAM_ROLE_NAME_MAX,
    LOG_GROUP_NAME_MAX,
    S3_BUCKET_PREFIX_MAX,
)
from tests.harness import Recorded, run_invalid, run_program, run_stack

STACKS = Path(__file__).parents[2] / "stacks"
_BOTO = botocore.session.get_session()


def botocore_max(service: str, operation: str, member: str) -> int:
    shape = _BOTO.get_service_model(service).operation_model(operation).input_shape.members[member]
    return int(shape.metadata["max"])


# Resource type -> (the input naming it, its limit). The limit is what AWS checks on create.
LIMITS: dict[str, tuple[str, int]] = {
    "aws:iam/role:Role": ("name", botocore_max("iam", "CreateRole", "RoleName")),
    "aws:iam/rolePolicy:RolePolicy": ("name", botocore_max("iam", "PutRolePolicy", "PolicyName")),
    "aws:eks/cluster:Cluster": ("name", botocore_max("eks", "CreateCluster", "name")),
    "aws:kms/alias:Alias": ("name", botocore_max("kms", "CreateAlias", "AliasName")),
    "aws:cloudwatch/logGroup:LogGroup": ("name", botocore_max("logs", "CreateLogGroup", "logGroupName")),
    "aws:eks/nodeGroup:NodeGroup": ("nodeGroupName", EKS_NODEGROUP_NAME_MAX),  # EKS docs: 1-63
}


def physical_name(resource: Recorded, key: str) -> str:
    """The name AWS will see: the one given, or Pulumi's ``<logical>-xxxxxxx``."""
    given = resource.inputs.get(key)
    return given if isinstance(given, str) else f"{resource.name}-{'x' * (AUTONAME_SUFFIX - 1)}"


def test_our_constants_agree_with_botocore() -> None:
    assert botocore_max("iam", "CreateRole", "RoleName") == IAM_ROLE_NAME_MAX
    assert botocore_max("logs", "CreateLogGroup", "logGroupName") == LOG_GROUP_NAME_MAX


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_derived_name_of_a_stack_fits(stack: str) -> None:
    recording = run_stack(STACKS, stack)
    checked = 0
    for resource in recording:
        if resource.type in LIMITS:
            key, limit = LIMITS[resource.type]
            name = physical_name(resource, key)
            assert len(name) <= limit, f"{resource.type} {name!r}: {len(name)} > {limit}"
            checked += 1
        if resource.type == "aws:s3/bucket:Bucket":
            assert len(resource.inputs["bucketPrefix"]) <= S3_BUCKET_PREFIX_MAX
            checked += 1
    assert checked > 15


def test_the_longest_cluster_name_fits_and_one_more_character_is_refused() -> None:
    longest = "c" * (IAM_ROLE_NAME_MAX - len("-vpc-cni") - AUTONAME_SUFFIX)
    recording, _ = run_program(lambda: Cluster(longest, ClusterArgs(subnet_ids=["a", "b"])))
    roles = [physical_name(r, "name") for r in recording.of_type("aws:iam/role:Role")]
    assert max(len(n) for n in roles) == IAM_ROLE_NAME_MAX
    recording, error = run_invalid(lambda: Cluster(longest + "c", ClusterArgs(subnet_ids=["a", "b"])))
    assert error.field == "name" and str(IAM_ROLE_NAME_MAX) in error.allowed
    assert recording.resources == []


def test_model_store_names_fit_the_bucket_prefix() -> None:
    kwargs: dict[str, Any] = {}
    _, error = run_invalid(lambda: ModelStore("m" * S3_BUCKET_PREFIX_MAX, **kwargs))
    assert error.field == "name"
    recording, _ = run_program(lambda: ModelStore("m" * (S3_BUCKET_PREFIX_MAX - 1)))
    assert len(recording.one("aws:s3/bucket:Bucket").inputs["bucketPrefix"]) == S3_BUCKET_PREFIX_MAX
