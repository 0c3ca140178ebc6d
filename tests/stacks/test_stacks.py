"""The Pulumi program itself, run under mocks for every stack file, and its config validation."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from inferstack.policies import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recording, run_invalid

STACKS = ROOT / "stacks"


def platform_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("platform_stack", STACKS / "platform_stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["platform_stack"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_stack(stack: str) -> Recording:
    return offline.run_stack(STACKS, stack, DEPLOYER)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_builds_the_whole_platform(stack: str) -> None:
    recording = run_stack(stack)
    types = {r.type for r in recording}
    for component in (
        "inferstack:network:Network",
        "inferstack:cluster:Cluster",
        "inferstack:nodegroups:NodeGroups",
        "inferstack:model_store:ModelStore",
        "inferstack:gpu:GpuOperators",
        "inferstack:monitoring:Monitoring",
        "inferstack:autoscaling:Autoscaling",
        "inferstack:model_service:TritonModelService",
    ):
        assert component in types, component
    assert len(recording.of_type("kubernetes:helm.sh/v3:Release")) == 5


def test_prod_shape() -> None:
    recording = run_stack("prod")
    assert len(recording.of_type("aws:ec2/natGateway:NatGateway")) == 3
    groups = recording.of_type("aws:eks/nodeGroup:NodeGroup")
    assert len(groups) == 1 + 3 + 3
    deployment = recording.one("kubernetes:apps/v1:Deployment").inputs
    assert (
        deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"]
        == "DoNotSchedule"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--model-repository=s3://models-bucket/ranker"
    coredns = recording.one("aws:eks/addon:Addon", "inferstack-prod-coredns")
    assert coredns.inputs["addonName"] == "coredns"


def test_dev_is_smaller() -> None:
    recording = run_stack("dev")
    assert len(recording.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(recording.of_type("aws:eks/nodeGroup:NodeGroup")) == 1 + 2 + 2


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"environment": "qa"}, "inferstack:environment"),
        ({"network": {"zone": 3}}, "inferstack:network"),
        ({"bogus": 1}, "inferstack"),
        ({"services": [{"name": "x", "models": ["x"]}]}, "inferstack:services[0]"),
        (
            {
                "environment": "prod",
                "services": [{"name": "x", "models": ["x"], "prefix": "x", "minReplicas": 1}],
            },
            "inferstack:services[0].min_replicas",
        ),
        ({"services": [{"name": "x", "models": ["x"], "prefix": "../x"}]}, "inferstack:services[0].prefix"),
        ({"cluster": {"kubernetesVersion": "1.20"}}, "version"),
        ({"gpu": {"spotInstanceTypes": ["g5.xlarge"]}}, "gpu_spot.instance_types"),
        ({"network": {"vpcCidr": "10.0.0.0/20"}}, "private_prefix"),
        # Deployable from where `pulumi up` runs: a private-only endpoint times out every Helm release.
        ({"cluster": {"publicAccessCidrs": []}}, "inferstack:cluster.publicAccessCidrs"),
        ({"cluster": {"publicAccessCidrs": ["10.0.0.0/8"]}}, "public_access_cidrs[0]"),
        ({"network": {"nat": "none"}}, "inferstack:network.nat"),
        ({"network": {"zones": "two"}}, "inferstack:network.zones"),
        ({"network": {"zones": 4}}, "inferstack:network.zones"),
        ({"network": {"zones": ["us-east-1a", "us-west-2a"]}}, "inferstack:network.zones[1]"),
        ({"cluster": {"name": "n" * 49}}, "name"),
    ],
)
def test_bad_config_names_the_key_and_registers_nothing(raw: dict[str, Any], field: str) -> None:
    module = platform_stack()
    deployable = {"cluster": {"publicAccessCidrs": ["198.51.100.7/32"]}}
    given = {**deployable, **raw, "cluster": {**deployable["cluster"], **raw.get("cluster", {})}}
    recording, error = run_invalid(lambda: module.build(module.parse_config(given, stack="dev")))
    assert error.field == field, error
    assert recording.resources == []


def test_the_pulumi_project_points_at_this_program() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["main"] == "stacks/" and project["stackConfigDir"] == "stacks"
    assert project["runtime"]["name"] == "python"
