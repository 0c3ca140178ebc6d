"""Every rule of the policy pack, with a passing and a failing fixture each."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from inferstack.policies import rules
from tests.stacks.test_stacks import run_stack

# Which recorded resource each type's fixture is (registration order is not deterministic).
PICK = {
    rules.RELEASE: "cluster-autoscaler",
    "aws:eks/nodeGroup:NodeGroup": "gpu-spot",
    "aws:ec2/launchTemplate:LaunchTemplate": "gpu",
}


@pytest.fixture(scope="module")
def prod() -> dict[str, dict[str, Any]]:
    """One recorded resource per type from the prod stack, as the Analyzer would receive it."""
    recording = run_stack("prod")
    chosen: dict[str, dict[str, Any]] = {}
    for resource in sorted(recording, key=lambda r: r.name):
        if PICK.get(resource.type, "") in resource.name:
            chosen.setdefault(resource.type, resource.inputs)
    return chosen


def mutated(props: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copied = copy.deepcopy(props)
    change(copied)
    return copied


def triton(props: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = props["spec"]["template"]["spec"]["containers"][0]
    return container


CASES: list[tuple[Callable[..., list[str]], str, Callable[[dict[str, Any]], None], str]] = [
    (
        rules.pinned_images,
        rules.DEPLOYMENT,
        lambda p: triton(p).update(image="nvcr.io/nvidia/tritonserver:latest"),
        "latest",
    ),
    (
        rules.pinned_images,
        rules.DEPLOYMENT,
        lambda p: triton(p).update(image="nvcr.io/nvidia/tritonserver"),
        "no tag",
    ),
    (rules.pinned_images, rules.RELEASE, lambda p: p["values"]["image"].update(tag="latest"), "latest"),
    (rules.pinned_charts, rules.RELEASE, lambda p: p.update(version="^2.0.0"), "exact"),
    (rules.pinned_charts, rules.RELEASE, lambda p: p.update(repositoryOpts={}), "repository"),
    (
        rules.eks_cluster_hardened,
        "aws:eks/cluster:Cluster",
        lambda p: p["vpcConfig"].update(endpointPublicAccess=True, publicAccessCidrs=["0.0.0.0/0"]),
        "open",
    ),
    (rules.eks_cluster_hardened, "aws:eks/cluster:Cluster", lambda p: p.pop("encryptionConfig"), "KMS"),
    (
        rules.eks_cluster_hardened,
        "aws:eks/cluster:Cluster",
        lambda p: p.update(enabledClusterLogTypes=["api"]),
        "audit",
    ),
    (
        rules.imdsv2_and_encrypted_volumes,
        "aws:ec2/launchTemplate:LaunchTemplate",
        lambda p: p["metadataOptions"].update(httpTokens="optional"),
        "IMDSv1",
    ),
    (
        rules.imdsv2_and_encrypted_volumes,
        "aws:ec2/launchTemplate:LaunchTemplate",
        lambda p: p["blockDeviceMappings"][0]["ebs"].update(encrypted="false"),
        "encrypted",
    ),
    (rules.gpu_nodes_tainted, "aws:eks/nodeGroup:NodeGroup", lambda p: p.update(taints=[]), "taint"),
    (
        rules.gpu_nodes_tainted,
        "aws:eks/nodeGroup:NodeGroup",
        lambda p: p.update(amiType="AL2023_x86_64_STANDARD"),
        "NVIDIA",
    ),
    (
        rules.s3_public_access_blocked,
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        lambda p: p.update(restrictPublicBuckets=False),
        "restrictPublicBuckets",
    ),
    (
        rules.no_static_aws_keys,
        rules.DEPLOYMENT,
        lambda p: triton(p)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}),
        "IRSA",
    ),
    (
        rules.triton_production_ready,
        rules.DEPLOYMENT,
        lambda p: triton(p).pop("readinessProbe"),
        "readinessProbe",
    ),
    (
        rules.triton_production_ready,
        rules.DEPLOYMENT,
        lambda p: triton(p)["securityContext"].update(allowPrivilegeEscalation=True),
        "root",
    ),
    (
        rules.triton_production_ready,
        rules.DEPLOYMENT,
        lambda p: p["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=300),
        "spot",
    ),
]


@pytest.mark.parametrize(
    ("rule", "resource_type", "change", "expected"),
    CASES,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)],
)
def test_rule_passes_the_stack_and_fails_the_broken_fixture(
    prod: dict[str, dict[str, Any]],
    rule: Callable[..., list[str]],
    resource_type: str,
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    good = prod[resource_type]
    assert rule(resource_type, good) == []
    problems = rule(resource_type, mutated(good, change))
    assert problems and any(expected in p for p in problems), problems


def test_every_rule_is_covered() -> None:
    covered = {c[0].__name__ for c in CASES}
    assert covered == {r.check.__name__ for r in rules.RULES}


def test_rules_ignore_other_types(prod: dict[str, dict[str, Any]]) -> None:
    for rule in rules.RULES:
        assert rule.check("aws:iam/role:Role", prod["aws:iam/role:Role"]) == []


def test_the_analyzer_process_imports_no_resource_module() -> None:
    import subprocess
    import sys

    code = "import sys, inferstack.policies.pack as p; print(sorted(m for m in sys.modules if m.startswith('inferstack')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for forbidden in ("components", "serving", "cluster", "network", "nodegroups", "model_store"):
        assert forbidden not in loaded, loaded
