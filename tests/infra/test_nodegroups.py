"""Node groups: presets, autoscaler tags, hardened launch templates, and surviving a zone loss."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.infra.nodegroups import (
    CAPACITY_TYPE_LABEL,
    GPU_MODEL_LABEL,
    GPU_TAINT,
    NodeGroupPlan,
    NodeGroups,
    NodeGroupsArgs,
    check_zone_loss,
    gpu_plans,
    gpu_spot_plans,
    surviving_share,
    system_plan,
)
from tests.harness import ZONES, run_invalid, run_program

SUBNETS = {zone: f"subnet-{zone}" for zone in ZONES}
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def default_prod_plans() -> list[NodeGroupPlan]:
    return [system_plan(ZONES), *gpu_plans(ZONES), *gpu_spot_plans(ZONES)]


def build(plans: list[NodeGroupPlan], share: float = 0.5) -> NodeGroups:
    return NodeGroups(
        "nodes",
        NodeGroupsArgs(
            cluster_name="prod",
            eks_cluster_name="prod",
            node_role_arn="arn:aws:iam::123456789012:role/node",
            subnet_ids_by_zone=SUBNETS,
            plans=plans,
            min_surviving_gpu_share=share,
        ),
    )


def groups(recording: Any) -> dict[str, dict[str, Any]]:
    return {
        r.name.removeprefix("nodes-").removesuffix("-ng"): r.inputs
        for r in recording.of_type("aws:eks/nodeGroup:NodeGroup")
    }


def test_one_gpu_group_per_zone_for_on_demand_and_spot() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    found = groups(recording)
    assert sorted(found) == sorted(
        ["system", *(f"gpu-{z}" for z in ZONES), *(f"gpu-spot-{z}" for z in ZONES)]
    )
    assert found["system"]["subnetIds"] == [SUBNETS[z] for z in ZONES]
    for zone in ZONES:
        on_demand, spot = found[f"gpu-{zone}"], found[f"gpu-spot-{zone}"]
        assert on_demand["subnetIds"] == [SUBNETS[zone]] and spot["subnetIds"] == [SUBNETS[zone]]
        assert on_demand["capacityType"] == "ON_DEMAND" and spot["capacityType"] == "SPOT"
        assert on_demand["amiType"] == spot["amiType"] == "AL2023_x86_64_NVIDIA"
        assert (
            on_demand["taints"]
            == spot["taints"]
            == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        )
        assert (
            on_demand["labels"][CAPACITY_TYPE_LABEL] == "on-demand"
            and spot["labels"][CAPACITY_TYPE_LABEL] == "spot"
        )
        assert on_demand["labels"][GPU_MODEL_LABEL] == "A10G"
        assert len(spot["instanceTypes"]) >= 2
        assert on_demand["scalingConfig"]["minSize"] == 0  # scale from zero
    assert found["system"]["amiType"] == "AL2023_x86_64_STANDARD" and not found["system"]["taints"]


def test_autoscaler_tags_make_scale_from_zero_possible() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    tags = groups(recording)["gpu-us-east-1b"]["tags"]
    assert tags["k8s.io/cluster-autoscaler/enabled"] == "true"
    assert tags["k8s.io/cluster-autoscaler/prod"] == "owned"
    assert tags[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "1"
    assert tags[f"{TEMPLATE}/label/{CAPACITY_TYPE_LABEL}"] == "on-demand"
    assert tags[f"{TEMPLATE}/label/topology.kubernetes.io/zone"] == "us-east-1b"
    # ... and the same tags reach the Auto Scaling group itself, where the autoscaler reads them.
    asg_tags = {
        r.inputs["tag"]["key"]: r.inputs["tag"]["value"]
        for r in recording.of_type("aws:autoscaling/tag:Tag")
        if r.inputs["autoscalingGroupName"] == "eks-nodes-gpu-us-east-1b-ng-asg"
    }
    assert asg_tags == {k: v for k, v in tags.items() if k.startswith("k8s.io/cluster-autoscaler")}


def test_launch_templates_require_imdsv2_and_encrypt_gp3() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    templates = recording.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == 7
    for template in templates:
        metadata = template.inputs["metadataOptions"]
        assert metadata["httpTokens"] == "required" and metadata["httpPutResponseHopLimit"] == 2
        ebs = template.inputs["blockDeviceMappings"][0]["ebs"]
        assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3"
        if "gpu" in template.name:
            assert ebs["volumeSize"] >= 100  # Triton images are large
    ngs = groups(recording)
    assert all(ng["launchTemplate"]["id"].endswith("-lt-id") for ng in ngs.values())


def test_bottlerocket_puts_the_volume_on_its_data_device() -> None:
    plans = [system_plan(ZONES), *gpu_plans(ZONES, ami_type="BOTTLEROCKET_x86_64_NVIDIA")]
    recording, _ = run_program(lambda: build(plans))
    template = recording.one("aws:ec2/launchTemplate:LaunchTemplate", "nodes-gpu-us-east-1a-lt")
    assert template.inputs["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"


def test_default_prod_settings_survive_the_loss_of_any_zone() -> None:
    gpu = [p for p in default_prod_plans() if p.gpus_per_node]
    for zone in ZONES:
        assert surviving_share(gpu, zone) >= 0.5
        assert surviving_share(gpu, zone) == pytest.approx(2 / 3)
    check_zone_loss(gpu, 0.6)


def test_lopsided_capacity_is_refused_before_anything_registers() -> None:
    lopsided = [replace(p, max_size=10 if p.zones == (ZONES[0],) else 1) for p in gpu_plans(ZONES)]
    assert surviving_share(lopsided, ZONES[0]) == pytest.approx(2 / 12)
    recording, error = run_invalid(lambda: build([system_plan(ZONES), *lopsided], share=0.5))
    assert error.field == "min_surviving_gpu_share" and ZONES[0] in error.allowed
    assert recording.resources == []


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: gpu_plans(ZONES[:1]), "zones"),
        (lambda: gpu_plans(ZONES, min_size=3, desired_size=1), "gpu.desired_size"),
        (lambda: gpu_plans(ZONES, desired_size=5, max_size=4), "gpu.desired_size"),
        (lambda: gpu_plans(ZONES, instance_type="m6i.xlarge"), "gpu.instance_types[0]"),
        (lambda: gpu_plans(ZONES, instance_type="x9.huge"), "gpu.instance_types[0]"),
        (lambda: gpu_plans(ZONES, ami_type="AL2023_x86_64_STANDARD"), "gpu.ami_type"),
        (lambda: gpu_spot_plans(ZONES, instance_types=["g5.xlarge"]), "gpu_spot.instance_types"),
        (
            lambda: gpu_spot_plans(ZONES, instance_types=["g5.xlarge", "g5.2xlarge"]),
            "gpu_spot.instance_types",
        ),
        (
            lambda: gpu_spot_plans(ZONES, instance_types=["g5.xlarge", "g6.12xlarge"]),
            "gpu_spot.instance_types",
        ),
        (
            lambda: gpu_spot_plans(ZONES, instance_types=["g4dn.xlarge", "g6e.xlarge"]),
            "gpu_spot.instance_types",
        ),
        (
            lambda: gpu_spot_plans(ZONES, instance_types=["g5.xlarge", "m6i.xlarge"]),
            "gpu_spot.instance_types[1]",
        ),
        (lambda: system_plan(ZONES, instance_types=["g5.xlarge"]), "system.instance_types[0]"),
    ],
)
def test_bad_node_group_settings(make: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        make()
    assert caught.value.field == field, caught.value


def test_hand_made_plans_are_validated_too() -> None:
    untainted = NodeGroupPlan(
        "gpu", ("us-east-1a",), "ON_DEMAND", ("g5.xlarge",), "AL2023_x86_64_NVIDIA", 0, 0, 2
    )
    with pytest.raises(InvalidInput) as caught:
        run_program(lambda: build([untainted], share=0))
    assert caught.value.field == "gpu.taints"
    tainted = NodeGroupPlan(
        "gpu",
        ("us-east-1a",),
        "ON_DEMAND",
        ("g5.xlarge",),
        "AL2023_x86_64_NVIDIA",
        0,
        0,
        2,
        taints=(GPU_TAINT,),
    )
    recording, _ = run_program(lambda: build([tainted], share=0))
    assert len(recording.of_type("aws:eks/nodeGroup:NodeGroup")) == 1
