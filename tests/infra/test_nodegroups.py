"""Node groups: presets, autoscaler tags, hardened launch templates, and surviving a zone loss."""

from __future__ import annotations

import base64
import dataclasses
import email
import subprocess
from dataclasses import replace
from typing import Any

import pytest
import yaml

from inferstack.infra.errors import InvalidInput
from inferstack.infra.node_plans import (
    CAPACITY_TYPE_LABEL,
    GPU_MODEL_LABEL,
    GPU_TAINT,
    INSTANCE_STORE_ARRAY,
    NODE_MODEL_CACHE_PATH,
    NODE_MODEL_CACHE_UID,
    ZONE_LABEL,
    NodeGroupPlan,
    check_zone_loss,
    gpu_plans,
    gpu_spot_plans,
    node_user_data,
    surviving_share,
    system_plans,
)
from inferstack.infra.nodegroups import NodeGroups, NodeGroupsArgs
from inferstack.infra.versions import AL2023_RELEASE_VERSIONS
from inferstack.stacks.offline import run_stack
from tests.conftest import ROOT
from tests.harness import DEPLOYER, ZONES, Recording, run_invalid, run_program

SUBNETS = {zone: f"subnet-{zone}" for zone in ZONES}
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def default_prod_plans() -> list[NodeGroupPlan]:
    return [*system_plans(ZONES), *gpu_plans(ZONES), *gpu_spot_plans(ZONES)]


def build(plans: list[NodeGroupPlan], share: float = 0.5) -> NodeGroups:
    return NodeGroups(
        "nodes",
        NodeGroupsArgs(
            cluster_name="prod",
            eks_cluster_name="prod",
            node_role_arn="arn:aws:iam::123456789012:role/node",
            subnet_ids_by_zone=SUBNETS,
            plans=plans,
            kubernetes_version="1.35",
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
        [*(f"system-{z}" for z in ZONES), *(f"gpu-{z}" for z in ZONES), *(f"gpu-spot-{z}" for z in ZONES)]
    )
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
        system = found[f"system-{zone}"]
        assert system["amiType"] == "AL2023_x86_64_STANDARD" and not system["taints"]


def test_system_nodes_come_back_in_the_zone_of_their_volumes() -> None:
    """Prometheus's and Jaeger's EBS volumes are zonal: after a node loss the replacement must be
    addable in the volume's zone, so each zone has its own system group that never scales to zero."""
    recording, _ = run_program(lambda: build(default_prod_plans()))
    system = {
        name: g for name, g in groups(recording).items() if g["labels"]["inferstack.io/node-role"] == "system"
    }
    assert sorted(g["subnetIds"][0] for g in system.values()) == sorted(SUBNETS[z] for z in ZONES)
    for group in system.values():
        assert len(group["subnetIds"]) == 1 and group["scalingConfig"]["minSize"] >= 1
    with pytest.raises(InvalidInput) as caught:
        system_plans(ZONES, min_size=0)
    assert caught.value.field == "system.min_size"


def test_autoscaler_tags_make_scale_from_zero_possible() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    tags = groups(recording)["gpu-us-east-1b"]["tags"]
    assert tags["k8s.io/cluster-autoscaler/enabled"] == "true"
    assert tags["k8s.io/cluster-autoscaler/prod"] == "owned"
    assert tags[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "1"
    assert tags[f"{TEMPLATE}/label/{CAPACITY_TYPE_LABEL}"] == "on-demand"
    assert tags[f"{TEMPLATE}/label/topology.kubernetes.io/zone"] == "us-east-1b"
    assert tags[f"{TEMPLATE}/label/k8s.amazonaws.com/accelerator"] == "A10G"
    # Without it the template has no ephemeral storage (kubernetes/autoscaler#1869): what the 200 GiB
    # root volume allocates once the kubelet keeps its share.
    assert tags[f"{TEMPLATE}/resources/ephemeral-storage"] == "177Gi"
    # ... and the node template reaches the Auto Scaling group itself, where the autoscaler reads it;
    # the two discovery tags EKS puts there itself are left to EKS (two owners would fight over them).
    asg_tags = {
        r.inputs["tag"]["key"]: r.inputs["tag"]["value"]
        for r in recording.of_type("aws:autoscaling/tag:Tag")
        if r.inputs["autoscalingGroupName"] == "eks-nodes-gpu-us-east-1b-ng-asg"
    }
    discovery = {"k8s.io/cluster-autoscaler/enabled", "k8s.io/cluster-autoscaler/prod"}
    assert asg_tags == {k: v for k, v in tags.items() if k.startswith(TEMPLATE)}
    assert not discovery & set(asg_tags)


def test_asg_tag_resources_are_named_by_key_so_a_new_label_replaces_nothing() -> None:
    def tag_names(plans: list[NodeGroupPlan]) -> dict[str, str]:
        recording, _ = run_program(lambda: build(plans))
        return {r.name: r.inputs["tag"]["key"] for r in recording.of_type("aws:autoscaling/tag:Tag")}

    before = tag_names(default_prod_plans())
    system, *rest = default_prod_plans()
    relabelled = dataclasses.replace(system, labels={"aaa.example.com/first": "yes", **system.labels})
    after = tag_names([relabelled, *rest])
    assert len(after) == len(before) + 1
    assert {name: key for name, key in after.items() if name in before} == before


def test_launch_templates_require_imdsv2_and_encrypt_gp3() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    templates = recording.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == 9  # a system, an on-demand and a spot group per zone
    for template in templates:
        metadata = template.inputs["metadataOptions"]
        # Hop limit 1: a pod in its own network namespace cannot reach IMDS and take the node role.
        assert metadata["httpTokens"] == "required" and metadata["httpPutResponseHopLimit"] == 1
        ebs = template.inputs["blockDeviceMappings"][0]["ebs"]
        assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3"
        if "gpu" in template.name:
            assert ebs["volumeSize"] >= 100  # Triton images are large
    ngs = groups(recording)
    assert all(ng["launchTemplate"]["id"].endswith("-lt-id") for ng in ngs.values())


def test_bottlerocket_sizes_its_data_volume_and_encrypts_both() -> None:
    bottlerocket = gpu_plans(ZONES, ami_type="BOTTLEROCKET_x86_64_NVIDIA", disk_gib=300)
    _, error = run_invalid(lambda: build([*system_plans(ZONES), *bottlerocket]))
    assert error.field == "gpu-us-east-1a.release_version"  # no floating AMI: Bottlerocket names its release
    plans = [
        *system_plans(ZONES),
        *gpu_plans(
            ZONES, ami_type="BOTTLEROCKET_x86_64_NVIDIA", disk_gib=300, release_version="1.55.0-4d2e7c1b"
        ),
    ]
    recording, _ = run_program(lambda: build(plans))
    assert groups(recording)["gpu-us-east-1a"]["releaseVersion"] == "1.55.0-4d2e7c1b"
    template = recording.one("aws:ec2/launchTemplate:LaunchTemplate", "nodes-gpu-us-east-1a-lt")
    devices = {m["deviceName"]: m["ebs"] for m in template.inputs["blockDeviceMappings"]}
    assert sorted(devices) == ["/dev/xvda", "/dev/xvdb"]
    assert devices["/dev/xvdb"]["volumeSize"] == 300  # images and containers live here
    assert "volumeSize" not in devices["/dev/xvda"]  # the OS volume keeps the AMI snapshot's size
    assert all(ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3" for ebs in devices.values())


def test_default_presets_survive_the_loss_of_any_zone() -> None:
    gpu = [p for p in default_prod_plans() if p.gpus_per_node]
    for zone in ZONES:
        assert surviving_share(gpu, zone) == pytest.approx(2 / 3)
    check_zone_loss(gpu, 0.66)
    with pytest.raises(InvalidInput):
        check_zone_loss(gpu, 0.67)


def recorded_gpu_plans(recording: Recording) -> list[NodeGroupPlan]:
    """The GPU node groups as the engine received them, in the zone and with the GPUs per node that
    cluster-autoscaler reads from their node-template tags."""
    plans = []
    for group in recording.of_type("aws:eks/nodeGroup:NodeGroup"):
        tags, scaling = group.inputs["tags"], group.inputs["scalingConfig"]
        if f"{TEMPLATE}/resources/nvidia.com/gpu" not in tags:
            continue
        plan = NodeGroupPlan(
            group.name,
            (tags[f"{TEMPLATE}/label/{ZONE_LABEL}"],),
            group.inputs["capacityType"],
            tuple(group.inputs["instanceTypes"]),
            group.inputs["amiType"],
            int(scaling["minSize"]),
            int(scaling["desiredSize"]),
            int(scaling["maxSize"]),
        )
        assert str(plan.gpus_per_node) == tags[f"{TEMPLATE}/resources/nvidia.com/gpu"]
        plans.append(plan)
    return plans


def test_prod_stack_keeps_its_configured_share_of_gpus_when_any_zone_fails() -> None:
    config = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())["config"]
    required = config["inferstack:gpu"]["minSurvivingShare"]
    plans = recorded_gpu_plans(run_stack(ROOT / "stacks", "prod", DEPLOYER))
    zones = {zone for plan in plans for zone in plan.zones}
    assert len(zones) == config["inferstack:network"]["zones"] == 3
    assert {p.capacity_type for p in plans} == {"ON_DEMAND", "SPOT"}
    for zone in zones:
        assert surviving_share(plans, zone) >= required, zone


def test_gpu_capacity_in_one_zone_only_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_zone_loss(gpu_plans(ZONES)[:1], 0.5)
    assert caught.value.field == "plans" and caught.value.value == [ZONES[0]]
    check_zone_loss(gpu_plans(ZONES)[:1], 0)  # no share asked for: allowed (dev)


def test_zones_without_subnets_are_refused_before_anything_registers() -> None:
    def program() -> None:
        NodeGroups(
            "nodes",
            NodeGroupsArgs(
                cluster_name="prod",
                eks_cluster_name="prod",
                node_role_arn="arn:aws:iam::123456789012:role/node",
                subnet_ids_by_zone={z: SUBNETS[z] for z in ZONES[:2]},
                plans=default_prod_plans(),
                kubernetes_version="1.35",
            ),
        )

    recording, error = run_invalid(program)
    assert error.field == f"system-{ZONES[2]}.zones" and error.value == [ZONES[2]]
    assert recording.resources == []


def test_lopsided_capacity_is_refused_before_anything_registers() -> None:
    lopsided = [replace(p, max_size=10 if p.zones == (ZONES[0],) else 1) for p in gpu_plans(ZONES)]
    assert surviving_share(lopsided, ZONES[0]) == pytest.approx(2 / 12)
    recording, error = run_invalid(lambda: build([*system_plans(ZONES), *lopsided], share=0.5))
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
        (  # same GPU, different CPU/memory: the autoscaler's template would be wrong for one of them
            lambda: gpu_spot_plans(ZONES, instance_types=["g5.2xlarge", "g6.xlarge"]),
            "gpu_spot.instance_types",
        ),
        (lambda: system_plans(ZONES, instance_types=["g5.xlarge"]), "system.instance_types[0]"),
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


def test_node_groups_pin_the_cluster_version_and_the_ami_release() -> None:
    recording, _ = run_program(lambda: build(default_prod_plans()))
    for group in groups(recording).values():
        assert group["version"] == "1.35"
        assert group["releaseVersion"] == AL2023_RELEASE_VERSIONS["1.35"]
    _, error = run_invalid(
        lambda: build(
            [
                dataclasses.replace(system_plans(ZONES)[0], release_version="1.34.4-20260304"),
                *gpu_plans(ZONES),
            ]
        )
    )
    assert error.field == f"system-{ZONES[0]}.release_version"


def test_node_groups_wait_for_the_node_role_policies_and_early_addons() -> None:
    """terraform-aws-eks's before_compute: vpc-cni, kube-proxy and pod identity exist before any node
    joins (a node without a CNI never turns Ready), and the role's policies outlive the nodes on destroy."""
    recording = run_stack(ROOT / "stacks", "dev", DEPLOYER)
    urns = {r.name: r.urn for r in recording}
    needed = {
        urns[name]
        for name in (
            "inferstack-dev-node-AmazonEKSWorkerNodePolicy",
            "inferstack-dev-node-AmazonEC2ContainerRegistryReadOnly",
            "inferstack-dev-vpc-cni",
            "inferstack-dev-kube-proxy",
            "inferstack-dev-eks-pod-identity-agent",
        )
    }
    node_groups = recording.of_type("aws:eks/nodeGroup:NodeGroup")
    assert node_groups
    for group in node_groups:
        assert needed <= set(group.dependencies), group.name


def test_al2023_nodes_put_the_model_cache_on_the_instance_store_raid() -> None:
    """The user data EKS merges with its own: nodeadm's RAID0 over the NVMe instance store, then the model
    cache's folder on it (or the root volume), owned by Triton's user; the script is valid bash."""
    recording, _ = run_program(lambda: build(default_prod_plans()))
    templates = {t.name: t.inputs for t in recording.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    user_data = base64.b64decode(templates["nodes-gpu-us-east-1a-lt"]["userData"]).decode()
    message = email.message_from_string(user_data)
    assert message.is_multipart()
    parts = {p.get_content_type(): p.get_payload() for p in message.get_payload()}
    node_config = yaml.safe_load(parts["application/node.eks.aws"])
    assert node_config["kind"] == "NodeConfig" and node_config["apiVersion"] == "node.eks.aws/v1alpha1"
    assert node_config["spec"]["instance"]["localStorage"] == {"strategy": "RAID0"}
    script = parts["text/x-shellscript"]
    assert f"cache={NODE_MODEL_CACHE_PATH}" in script and f"chown {NODE_MODEL_CACHE_UID}:" in script
    assert f"mountpoint -q {INSTANCE_STORE_ARRAY}" in script
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert all("userData" in t for t in templates.values())  # the system group runs the same bootstrap


def test_bottlerocket_takes_no_shell_user_data() -> None:
    plan = gpu_plans(ZONES, ami_type="BOTTLEROCKET_x86_64_NVIDIA", release_version="1.55.0-4d2e7c1b")[0]
    assert node_user_data(plan) is None
    assert node_user_data(gpu_plans(ZONES)[0]) is not None
