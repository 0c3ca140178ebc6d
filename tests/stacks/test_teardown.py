"""`pulumi destroy` leaves nothing that costs money behind: read from the plan's dependency graph.

The engine deletes a resource only after everything that depends on it (depends_on, components
expanded to their children; input dependencies; the provider it is registered with). So whatever
owns a volume (a PersistentVolumeClaim, a StatefulSet's claim templates, a chart with persistence,
the namespace that holds them) must depend on the EBS CSI driver: deleted first, while the driver's
controller still runs to delete the EBS volume behind it. A LoadBalancer Service must depend on the
cluster whose cloud provider deletes its NLB (and, through it, on the subnets the NLB sits in).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from inferstack.infra.storage import CLUSTER_TAG
from inferstack.stacks import offline
from tests.harness import DEPLOYER, Recorded, Recording
from tests.stacks.test_failover_stack import ENDPOINTS

STACKS = Path(__file__).resolve().parents[2] / "stacks"
EBS_CSI = "aws:eks/addon:Addon"
CLUSTER = "aws:eks/cluster:Cluster"
DR = {"inferstack:failover.zone": "example.com", **ENDPOINTS}
KARPENTER = {"inferstack:capacity": "karpenter"}


@cache
def plan(stack: str) -> Recording:
    """``prod+karpenter``: prod with Karpenter's NodePools in place of the GPU node groups."""
    name, _, mode = stack.partition("+")
    settings = {**DEPLOYER, **(DR if name == "prod-dr" else {}), **(KARPENTER if mode else {})}
    return offline.run_stack(STACKS, name, settings)


def edges(resource: Recorded) -> set[str]:
    found = set(resource.dependencies)
    for urns in resource.property_dependencies.values():
        found |= set(urns)
    if resource.provider:
        found.add(resource.provider.rsplit("::", 1)[0])
    return found


def reaches(recording: Recording, start: Recorded, target: str) -> bool:
    """Whether ``start`` depends, at any depth, on the resource with URN ``target``."""
    by_urn = {r.urn: r for r in recording}
    seen, todo = set(), [start.urn]
    while todo:
        urn = todo.pop()
        if urn == target:
            return True
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        todo.extend(edges(by_urn[urn]))
    return False


def _text(resource: Recorded) -> str:
    return json.dumps(resource.inputs, default=str)


def owns_volumes(resource: Recorded) -> bool:
    spec: Any = resource.inputs.get("spec") or {}
    if resource.type == "kubernetes:core/v1:PersistentVolumeClaim":
        return True
    if resource.type == "kubernetes:apps/v1:StatefulSet":
        return bool(spec.get("volumeClaimTemplates"))
    if resource.type.startswith("kubernetes:helm.sh/"):
        return any(key in _text(resource) for key in ('"volumeClaimTemplate"', '"storageClassName"'))
    return False


def namespace_of(resource: Recorded) -> str | None:
    if resource.type.startswith("kubernetes:helm.sh/"):
        return resource.inputs.get("namespace")
    metadata = resource.inputs.get("metadata") or {}
    return metadata.get("namespace")


def volume_owners(recording: Recording) -> list[Recorded]:
    owners = [r for r in recording if r.custom and owns_volumes(r)]
    namespaces = {namespace_of(r) for r in owners}
    owners += [
        r
        for r in recording.of_type("kubernetes:core/v1:Namespace")
        if (r.inputs.get("metadata") or {}).get("name") in namespaces
    ]
    return owners


@pytest.mark.parametrize("stack", ["prod", "prod-dr", "dev", "prod+karpenter"])
def test_what_owns_a_volume_is_deleted_while_the_csi_driver_runs(stack: str) -> None:
    recording = plan(stack)
    driver = next(r for r in recording.of_type(EBS_CSI) if r.inputs.get("addonName") == "aws-ebs-csi-driver")
    owners = volume_owners(recording)
    # Prometheus's claim (kube-prometheus-stack), and the namespace that holds it, at the least.
    assert {r.type for r in owners} >= {"kubernetes:helm.sh/v3:Release", "kubernetes:core/v1:Namespace"}
    stray = [f"{r.type} {r.name}" for r in owners if not reaches(recording, r, driver.urn)]
    assert stray == []


@pytest.mark.parametrize("stack", ["prod-dr"])
def test_load_balancer_services_go_before_the_cluster_that_deletes_their_nlb(stack: str) -> None:
    recording = plan(stack)
    ours = {r.urn for r in recording.of_type(CLUSTER)}
    balanced = [
        r
        for r in recording.of_type("kubernetes:core/v1:Service")
        if (r.inputs.get("spec") or {}).get("type") == "LoadBalancer"
    ]
    assert balanced
    # The primary region's Service lives in the primary stack's cluster, which this stack does not
    # delete; the standby's must go before this stack's cluster.
    standby = [r for r in balanced if r.name.endswith("-standby")]
    assert standby and all(any(reaches(recording, r, urn) for urn in ours) for r in standby)


@pytest.mark.parametrize("stack", ["prod", "prod-dr"])
def test_every_volume_is_tagged_with_its_cluster(stack: str) -> None:
    """What a destroy could still leave (a volume whose claim went as the driver stopped) is found by
    the cluster tag: the add-on's controller adds it to every volume, and the gp3 class asks for it."""
    recording = plan(stack)
    cluster = recording.one(CLUSTER).inputs["name"]
    driver = next(r for r in recording.of_type(EBS_CSI) if r.inputs.get("addonName") == "aws-ebs-csi-driver")
    controller = json.loads(driver.inputs["configurationValues"])["controller"]
    assert controller["k8sTagClusterId"] == cluster
    assert controller["extraVolumeTags"][CLUSTER_TAG] == cluster
    assert controller["extraVolumeTags"]["inferstack.io/environment"] == "prod"
    gp3 = recording.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert gp3["parameters"]["tagSpecification_1"] == f"{CLUSTER_TAG}={cluster}"


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_log_groups_are_owned_and_outlive_their_writers(stack: str) -> None:
    """The stack creates every log group (EKS and Fluent Bit would otherwise create them, kept forever
    and unknown to the stack) and deletes each only after what writes to it."""
    recording = plan(stack)
    groups = {r.inputs["name"]: r for r in recording.of_type("aws:cloudwatch/logGroup:LogGroup")}
    cluster = recording.one(CLUSTER)
    control_plane = groups[f"/aws/eks/{cluster.inputs['name']}/cluster"]
    assert reaches(recording, cluster, control_plane.urn)
    shipped = {name: g for name, g in groups.items() if g is not control_plane}
    assert shipped  # Fluent Bit's, on in every stack
    for name, group in shipped.items():
        writers = [r for r in recording if r.type.startswith("kubernetes:") and name in _text(r)]
        assert writers, f"nothing writes to {name}"
        for writer in writers:
            # It may not create the group itself, and goes before the group does.
            assert re.search(r"auto_create_group\W+Off", _text(writer))
            assert reaches(recording, writer, group.urn), f"{writer.name} outlives {name}"
