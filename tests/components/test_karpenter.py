"""`capacity: karpenter`: the NodePools and EC2NodeClass against the vendored CRDs (OpenAPI schema and
CEL rules), what they are sized and labelled by, what they wait for, the chart rendered by the real
helm with the stack's values, and node repair in both capacity modes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.components.charts import KARPENTER, KARPENTER_CRD
from inferstack.components.karpenter import EXPIRE_AFTER, WEIGHTS, node_class_subnet_tags
from inferstack.components.platform_config import GpuConfig
from inferstack.infra.instance_types import lookup
from inferstack.infra.karpenter import DISCOVERY_TAG, SERVICE_ACCOUNT
from inferstack.infra.versions import NODE_MONITORING_AGENT_ADDON_VERSIONS, al2023_alias
from inferstack.stacks import offline
from inferstack.stacks.plan import manifest
from tests.components.helm import find, render
from tests.components.test_helm_render import vendored_api_versions, waits_for
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recorded, Recording
from tests.schemas import CRD_DIRS, validate_custom_resource, validate_k8s, validate_recorded_manifests

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
KARPENTER_MODE = {**DEPLOYER, "inferstack:capacity": "karpenter"}


def run(stack: str, settings: dict[str, str]) -> Recording:
    return offline.run_stack(ROOT / "stacks", stack, settings)


@pytest.fixture(scope="module")
def prod() -> Recording:
    return run("prod", KARPENTER_MODE)


@pytest.fixture(scope="module")
def dev() -> Recording:
    return run("dev", KARPENTER_MODE)


def manifests(recording: Recording, resource_type: str) -> list[dict[str, Any]]:
    found = [manifest(r) for r in recording.of_type(resource_type)]
    return [m for m in found if m is not None]


def pools(recording: Recording) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests(recording, NODE_POOL)}


def release(recording: Recording, chart: str) -> Recorded:
    (found,) = [r for r in recording.of_type(RELEASE) if r.inputs["chart"].rsplit("/", 1)[-1] == chart]
    return found


def requirement(pool: dict[str, Any], key: str) -> dict[str, Any]:
    (found,) = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    return found


# --- the CRDs' schemas and CEL rules ------------------------------------------------------------------


def test_node_pools_and_node_class_pass_the_crds_schemas_and_cel_rules(
    prod: Recording, vendor_dir: Path
) -> None:
    objects = manifests(prod, NODE_POOL) + manifests(prod, NODE_CLASS)
    assert {o["kind"] for o in objects} == {"NodePool", "EC2NodeClass"} and len(objects) == 3
    for obj in objects:
        validate_custom_resource(obj, vendor_dir)


def test_every_object_of_the_plan_validates_in_karpenter_mode(prod: Recording, dev: Recording) -> None:
    validate_recorded_manifests(prod)
    validate_recorded_manifests(dev)


def _node_class(spec: Callable[[dict[str, Any]], None]) -> Callable[[Recording], dict[str, Any]]:
    def broken(recording: Recording) -> dict[str, Any]:
        (obj,) = copy.deepcopy(manifests(recording, NODE_CLASS))
        spec(obj["spec"])
        return obj

    return broken


def _spot_pool(spec: Callable[[dict[str, Any]], None]) -> Callable[[Recording], dict[str, Any]]:
    def broken(recording: Recording) -> dict[str, Any]:
        obj = copy.deepcopy(pools(recording)["gpu-spot"])
        spec(obj["spec"])
        return obj

    return broken


def _requirements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    requirements: list[dict[str, Any]] = spec["template"]["spec"]["requirements"]
    return requirements


def crd_messages(vendor_dir: Path) -> set[str]:
    """Every message of every rule of the vendored Karpenter CRDs."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(v["message"] for v in node.get("x-kubernetes-validations") or [] if "message" in v)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for folder in CRD_DIRS:
        for path in (vendor_dir / folder).glob("karpenter*.yaml"):
            walk(yaml.safe_load(path.read_text()))
    return found


BROKEN = [
    (
        "alias-without-version",
        _node_class(lambda s: s.update(amiSelectorTerms=[{"alias": "al2023"}])),
        "'alias' is improperly formatted, must match the format 'family@version'",
    ),
    (
        "role-and-profile",
        _node_class(lambda s: s.update(role="KarpenterNodeRole")),
        "must specify exactly one of ['role', 'instanceProfile']",
    ),
    (
        "alias-beside-id",
        _node_class(lambda s: s["amiSelectorTerms"].append({"id": "ami-0123456789abcdef0"})),
        "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms",
    ),
    (
        "restricted-tag",
        _node_class(lambda s: s["tags"].update({"karpenter.sh/nodepool": "x"})),
        "tag contains a restricted tag matching karpenter.sh/nodepool",
    ),
    (
        "min-values-above-values",
        _spot_pool(lambda s: _requirements(s)[1].update(minValues=9)),
        "requirements with 'minValues' must have at least that many values specified in the 'values' field",
    ),
    (
        "restricted-label",
        _spot_pool(lambda s: s["template"]["metadata"]["labels"].update({"karpenter.sh/nodepool": "x"})),
        'label "karpenter.sh/nodepool" is restricted',
    ),
    (
        "schedule-without-duration",
        _spot_pool(lambda s: s["disruption"]["budgets"][0].update(schedule="0 9 * * mon-fri")),
        "'schedule' must be set with 'duration'",
    ),
]


@pytest.mark.parametrize(("label", "broken", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_object_fails_with_the_crds_own_message(
    prod: Recording, vendor_dir: Path, label: str, broken: Callable[[Recording], dict[str, Any]], message: str
) -> None:
    assert message in crd_messages(vendor_dir), "the message is the CRD's own, not ours"
    with pytest.raises(AssertionError, match="breaks its CRD's rules") as caught:
        validate_custom_resource(broken(prod), vendor_dir)
    assert message in str(caught.value)


# --- sizing, labels, disruption -----------------------------------------------------------------------


def test_limits_come_from_the_stacks_gpu_maximums(prod: Recording) -> None:
    found = pools(prod)
    gpu, zones = GpuConfig(), 3
    spot_gpus = lookup(gpu.spot_instance_types[0], field="t").gpus
    assert found["gpu-spot"]["spec"]["limits"] == {
        "nvidia.com/gpu": str(gpu.spot_max_per_zone * zones * spot_gpus)
    }
    od_gpus = lookup(gpu.instance_type, field="t").gpus
    assert found["gpu-on-demand"]["spec"]["limits"] == {
        "nvidia.com/gpu": str(gpu.max_per_zone * zones * od_gpus)
    }
    spot_types = requirement(found["gpu-spot"], "node.kubernetes.io/instance-type")["values"]
    assert spot_types == list(gpu.spot_instance_types)
    families = requirement(found["gpu-spot"], "karpenter.k8s.aws/instance-family")
    assert families["values"] == sorted({t.split(".")[0] for t in gpu.spot_instance_types})
    assert families["minValues"] == 2  # one reclaimed family cannot take the whole spot fleet
    for pool in found.values():
        assert requirement(pool, "topology.kubernetes.io/zone")["values"] == list(offline.ZONES)
        capacity = requirement(pool, "karpenter.sh/capacity-type")["values"]
        assert capacity == [pool["metadata"]["name"].removeprefix("gpu-")]


def test_prod_disrupts_one_node_at_a_time_and_every_node_expires(prod: Recording, dev: Recording) -> None:
    for pool in pools(prod).values():
        assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "1"}]
        assert pool["spec"]["template"]["spec"]["expireAfter"] == EXPIRE_AFTER
    for pool in pools(dev).values():
        assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "10%"}]


def _satisfies(labels: dict[str, str], expression: dict[str, Any]) -> bool:
    assert expression["operator"] == "In"
    return labels.get(expression["key"]) in expression["values"]


def test_every_triton_service_has_a_pool_it_can_land_on_and_prefers_spot(prod: Recording) -> None:
    found = pools(prod)
    tritons = [d for d in prod.of_type("kubernetes:apps/v1:Deployment") if "triton" in str(d.inputs)]
    assert tritons
    for deployment in tritons:
        pod = deployment.inputs["spec"]["template"]["spec"]
        (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        fits = [
            name
            for name, pool in found.items()
            if all(
                _satisfies(pool["spec"]["template"]["metadata"]["labels"], e)
                for e in term["matchExpressions"]
            )
            and all(
                any(t["key"] == taint["key"] and t["effect"] == taint["effect"] for t in pod["tolerations"])
                for taint in pool["spec"]["template"]["spec"]["taints"]
            )
        ]
        assert set(fits) == {"gpu-spot", "gpu-on-demand"}, (deployment.name, fits)
    assert found["gpu-spot"]["spec"]["weight"] > found["gpu-on-demand"]["spec"]["weight"]


def test_a_reserved_pool_launches_into_the_reservations_first() -> None:
    reserved = '{"kind": "capacity-block", "reservationIds": ["cr-0123456789abcdef0"], "instanceType": "p5.48xlarge", "instances": 2}'
    recording = run("prod", {**KARPENTER_MODE, "inferstack:gpu.reserved": reserved})
    pool = pools(recording)["gpu-reserved"]
    assert requirement(pool, "karpenter.sh/capacity-type")["values"] == ["reserved"]
    assert pool["spec"]["weight"] == WEIGHTS["reserved"] == max(WEIGHTS.values())
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": str(2 * 8)}
    classes = {m["metadata"]["name"]: m for m in manifests(recording, NODE_CLASS)}
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == "gpu-reserved"
    assert classes["gpu-reserved"]["spec"]["capacityReservationSelectorTerms"] == [
        {"id": "cr-0123456789abcdef0"}
    ]
    assert "capacityReservationSelectorTerms" not in classes["gpu"]["spec"]


# --- what exists when, and what the node class points at ----------------------------------------------


def test_karpenter_replaces_the_gpu_groups_and_cluster_autoscaler(prod: Recording) -> None:
    groups = [g.name for g in prod.of_type(NODE_GROUP)]
    # one system group per zone, in either mode: every live zone keeps a node (zone spread's domains)
    assert len(groups) == 3 and all("system" in g for g in groups)
    charts = {r.inputs["chart"].rsplit("/", 1)[-1] for r in prod.of_type(RELEASE)}
    assert {"karpenter", "karpenter-crd", "keda"} <= charts and "cluster-autoscaler" not in charts
    managed = run("prod", DEPLOYER)
    assert len(managed.of_type(NODE_GROUP)) == 9 and not managed.of_type(NODE_POOL)
    assert "karpenter" not in {r.inputs["chart"].rsplit("/", 1)[-1] for r in managed.of_type(RELEASE)}


def test_pools_wait_for_the_crds_the_controller_and_what_a_node_needs_to_join(prod: Recording) -> None:
    crds, controller = release(prod, "karpenter-crd"), release(prod, "karpenter")
    assert crds.urn in waits_for(prod, controller.urn)
    assert controller.inputs.get("skipCrds") is True  # the CRD release owns them
    named = lambda kind, part: {r.urn for r in prod.of_type(kind) if part in r.name}  # noqa: E731
    iam = (
        named("aws:iam/rolePolicy:RolePolicy", "karpenter-controller")
        | named("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "karpenter-node")
        | named("aws:iam/instanceProfile:InstanceProfile", "karpenter-node")
        | {
            r.urn
            for r in prod.of_type("aws:eks/accessEntry:AccessEntry")
            if r.inputs.get("type") == "EC2_LINUX"
        }
    )
    assert len(iam) == 6  # the controller's two policies (its own, the volume key's), the node's three
    monitors = {r.urn for r in prod.of_type(RELEASE) if r.inputs["chart"] == "kube-prometheus-stack"}
    assert iam | monitors <= waits_for(prod, controller.urn)
    for resource in [*prod.of_type(NODE_POOL), *prod.of_type(NODE_CLASS)]:
        assert {crds.urn, controller.urn} | iam <= waits_for(prod, resource.urn), resource.name
    # Pulumi waits up to 10 minutes for a Deployment's pods: they must have a NodePool to get nodes from.
    pool_urns = {p.urn for p in prod.of_type(NODE_POOL)}
    for deployment in prod.of_type("kubernetes:apps/v1:Deployment"):
        if "triton" in str(deployment.inputs):
            assert pool_urns <= waits_for(prod, deployment.urn), deployment.name


def test_the_node_class_names_the_profile_subnets_and_security_group_the_stack_has(prod: Recording) -> None:
    (node_class,) = manifests(prod, NODE_CLASS)
    spec = node_class["spec"]
    (profile,) = prod.of_type("aws:iam/instanceProfile:InstanceProfile")
    assert spec["instanceProfile"] == profile.inputs["name"]
    (entry,) = [
        e for e in prod.of_type("aws:eks/accessEntry:AccessEntry") if e.inputs.get("type") == "EC2_LINUX"
    ]
    # One role: the profile's, the access entry's (EKS lets its nodes join) and the one Karpenter may pass.
    (role_urn,) = entry.property_dependencies["principalArn"]
    assert profile.property_dependencies["role"] == (role_urn,)
    (controller_policy,) = [
        p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("karpenter-controller")
    ]
    assert role_urn in controller_policy.property_dependencies["policy"]
    cluster = "inferstack-prod"
    (selector,) = spec["subnetSelectorTerms"]
    assert selector["tags"] == node_class_subnet_tags(cluster)
    subnets = prod.of_type("aws:ec2/subnet:Subnet")
    selected = [s for s in subnets if selector["tags"].items() <= s.inputs["tags"].items()]
    assert {s.inputs["availabilityZone"] for s in selected} == set(offline.ZONES)
    assert all(s.inputs["tags"]["inferstack.io/tier"] == "private" for s in selected)
    assert len(selected) == len(subnets) - 3  # none of the public ones
    (group_selector,) = spec["securityGroupSelectorTerms"]
    (tag,) = prod.of_type("aws:ec2/tag:Tag")
    assert group_selector["tags"] == {tag.inputs["key"]: tag.inputs["value"]} == {DISCOVERY_TAG: cluster}
    (eks,) = prod.of_type("aws:eks/cluster:Cluster")
    assert tag.property_dependencies["resourceId"] == (eks.urn,)  # the cluster security group EKS made
    assert spec["amiSelectorTerms"] == [{"alias": al2023_alias("1.35")}]
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    (volume,) = spec["blockDeviceMappings"]
    assert volume["rootVolume"] and volume["ebs"]["encrypted"] and volume["ebs"]["volumeType"] == "gp3"


# --- node health ------------------------------------------------------------------------------------------


def _agent(recording: Recording) -> Recorded:
    (agent,) = [
        a
        for a in recording.of_type("aws:eks/addon:Addon")
        if a.inputs["addonName"] == "eks-node-monitoring-agent"
    ]
    return agent


@pytest.mark.parametrize("mode", ["managed-node-groups", "karpenter"])
def test_node_repair_is_on_in_prod_in_both_modes(mode: str) -> None:
    settings = {**DEPLOYER, "inferstack:capacity": mode}
    prod, dev = run("prod", settings), run("dev", settings)
    for recording, on in ((prod, True), (dev, False)):
        agent = _agent(recording)
        assert agent.inputs["addonVersion"] == NODE_MONITORING_AGENT_ADDON_VERSIONS["1.35"]
        # Its DCGM host engine must run where the GPUs are: on nodes tainted for GPU pods only.
        dcgm = json.loads(agent.inputs["configurationValues"])["dcgmAgent"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in dcgm["tolerations"]
        system = [g for g in recording.of_type(NODE_GROUP) if "system" in g.name]
        assert {g.urn for g in system} <= waits_for(recording, agent.urn)  # a DaemonSet: nodes first
        for group in recording.of_type(NODE_GROUP):
            assert (group.inputs.get("nodeRepairConfig") or {}).get("enabled", False) is on, group.name
        if mode == "karpenter":
            gates = release(recording, "karpenter").inputs["values"]["settings"]["featureGates"]
            assert gates == {"nodeRepair": on}


# --- the chart, rendered by the real helm ----------------------------------------------------------------


def test_the_chart_renders_with_the_stacks_values(prod: Recording, vendor_dir: Path) -> None:
    given = release(prod, "karpenter").inputs
    assert (given["chart"], given["version"]) == (KARPENTER.reference, KARPENTER.version)

    def rendered(*api_versions: str) -> list[dict[str, Any]]:
        return render(
            vendor_dir,
            KARPENTER,
            release=given["name"],
            namespace=given["namespace"],
            values=given["values"],
            api_versions=api_versions,
            include_crds=not given.get("skipCrds"),
        )

    objects = rendered(*vendored_api_versions(vendor_dir), "monitoring.coreos.com/v1")
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            validate_custom_resource(obj, vendor_dir)
        else:
            validate_k8s(obj)
    assert not [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    deployment = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (queue,) = prod.of_type("aws:sqs/queue:Queue")
    assert env["CLUSTER_NAME"] == "inferstack-prod"
    assert env["INTERRUPTION_QUEUE"] == queue.inputs["name"]
    assert "NodeRepair=true" in env["FEATURE_GATES"].split(",")
    assert container["image"] == f"public.ecr.aws/karpenter/controller:1.14.1@{KARPENTER_DIGEST}"
    assert pod["nodeSelector"]["inferstack.io/node-role"] == "system"
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    account = find(objects, "ServiceAccount")
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    (role,) = [r for r in prod.of_type("aws:iam/role:Role") if "karpenter-controller" in r.name]
    assert (
        role_arn.endswith(role.name)
        and f"system:serviceaccount:kube-system:{SERVICE_ACCOUNT}" in role.inputs["assumeRolePolicy"]
    )
    # Its ServiceMonitor renders only where Prometheus's CRDs exist: hence after monitoring.
    assert find(objects, "ServiceMonitor")
    without = rendered()
    assert not [o for o in without if o["kind"] == "ServiceMonitor"]


KARPENTER_DIGEST = "sha256:445baefaaa689029cc12ac1f659b916b0b82fb14308ce536f8521fcf079116fa"


def test_the_crd_release_installs_the_kinds_the_pools_use(prod: Recording, vendor_dir: Path) -> None:
    given = release(prod, "karpenter-crd").inputs
    assert (given["chart"], given["version"]) == (KARPENTER_CRD.reference, KARPENTER_CRD.version)
    objects = render(
        vendor_dir, KARPENTER_CRD, release=given["name"], namespace=given["namespace"], values=given["values"]
    )
    kinds = {
        (f"{o['spec']['group']}/{v['name']}", o["spec"]["names"]["kind"])
        for o in objects
        if o["kind"] == "CustomResourceDefinition"
        for v in o["spec"]["versions"]
        if v["served"]
    }
    assert {("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass")} <= kinds
    for obj in objects:
        validate_k8s(obj)
