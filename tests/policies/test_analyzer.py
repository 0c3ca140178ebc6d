"""The policy pack's real Analyzer (a gRPC server started as the Pulumi CLI starts it) on whole stacks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferstack.policies.analyzer import PolicyPackProcess
from inferstack.policies.rules import RULES
from inferstack.policies.rules_failover import FAILOVER_RULES
from tests.stacks.test_stacks import run_stack


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackProcess]:
    with PolicyPackProcess() as running:
        yield running


def test_the_pack_serves_every_rule(pack: PolicyPackProcess) -> None:
    assert pack.policy_names() == [r.name for r in (*RULES, *FAILOVER_RULES)]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_passes_every_mandatory_policy(pack: PolicyPackProcess, stack: str) -> None:
    recording = run_stack(stack)
    violations = [v for r in recording for v in pack.analyze(r.type, r.inputs, name=r.name)]
    assert len(recording.resources) > 100
    assert [v for v in violations if v.mandatory] == []
    assert violations == []  # advisory ones too: the stacks are meant to be clean


def test_a_violation_is_reported_with_its_policy_and_level(pack: PolicyPackProcess) -> None:
    bucket_block = {
        "blockPublicAcls": True,
        "blockPublicPolicy": False,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    (violation,) = pack.analyze(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", bucket_block, name="models"
    )
    assert violation.policy == "s3-public-access-blocked" and violation.mandatory
    assert "blockPublicPolicy" in violation.message
    deployment = {
        "spec": {"template": {"spec": {"containers": [{"name": "triton", "image": "triton:24.10"}]}}}
    }
    advisory = pack.analyze("kubernetes:apps/v1:Deployment", deployment, name="ranker")
    assert advisory and all(v.policy == "triton-production-ready" and not v.mandatory for v in advisory)
