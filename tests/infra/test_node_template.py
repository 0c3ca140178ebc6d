"""The template node cluster-autoscaler builds for a group at zero, the node that joins, and the fit."""

from __future__ import annotations

import pytest

from inferstack.infra.instance_types import INSTANCE_TYPES
from inferstack.infra.node_template import (
    EPHEMERAL_STORAGE,
    GIB,
    GPU,
    TEMPLATE_TAG,
    GroupFacts,
    NodeTaint,
    ephemeral_storage_tag,
    kubelet_reserved_cpu,
    may_land,
    pod_requests,
    quantity,
    shortfalls,
    template_node,
)

G5 = INSTANCE_TYPES["g5.xlarge"]
GPU_TAINT_TAG = {f"{TEMPLATE_TAG}/taint/nvidia.com/gpu": "true:NoSchedule"}
TRITON = {
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "role", "operator": "In", "values": ["gpu"]}]}
                ]
            }
        }
    },
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "initContainers": [
        {
            "name": "front",
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "500m", "memory": "1536Mi"}},
        },
        {"name": "setup", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
    ],
    "containers": [
        {
            "name": "triton",
            "resources": {"requests": {"cpu": "3", "memory": "10Gi", GPU: "1", EPHEMERAL_STORAGE: "44Gi"}},
        }
    ],
}


def group(tags: dict[str, str], **extra: object) -> GroupFacts:
    return GroupFacts(name="gpu-a", instance=G5, zone="us-east-1a", asg_tags=tags, nodefs_gib=200, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"), [("500m", 0.5), ("3", 3.0), ("10Gi", 10 * GIB), ("1k", 1000.0), (2, 2.0)]
)
def test_quantities(text: object, value: float) -> None:
    assert quantity(text) == value


def test_a_bad_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity("ten")


def test_a_sidecar_adds_to_the_pod_and_a_plain_init_container_only_bounds_it() -> None:
    requests = pod_requests(TRITON)
    assert requests["cpu"] == 3.5  # triton + front; the init container's 2 (+0.5) is below
    assert requests["memory"] == 11.5 * GIB
    assert requests[EPHEMERAL_STORAGE] == 44 * GIB and requests["pods"] == 1


def test_without_the_ephemeral_storage_tag_the_template_has_none() -> None:
    """kubernetes/autoscaler#1869: buildNodeFromTemplate knows no ephemeral storage but from a tag."""
    node = template_node(group({f"{TEMPLATE_TAG}/label/role": "gpu", **GPU_TAINT_TAG}))
    assert node.template.get(EPHEMERAL_STORAGE, 0.0) == 0.0
    assert node.template["cpu"] == 4 and node.template[GPU] == 1 and node.template["pods"] == 110
    missing = shortfalls(node, [pod_requests(TRITON)])
    assert [m.resource for m in missing] == [EPHEMERAL_STORAGE]
    assert "the autoscaler's template offers 0.00Gi" in str(missing[0])


def test_the_tag_the_groups_carry_is_what_the_joined_node_allocates() -> None:
    tag = ephemeral_storage_tag(200)
    node = template_node(
        group({f"{TEMPLATE_TAG}/resources/{EPHEMERAL_STORAGE}": tag, f"{TEMPLATE_TAG}/label/role": "gpu"})
    )
    assert tag == "177Gi"
    assert (
        node.template[EPHEMERAL_STORAGE]
        <= node.joined[EPHEMERAL_STORAGE]
        < node.template[EPHEMERAL_STORAGE] + GIB
    )
    assert not shortfalls(node, [pod_requests(TRITON)])


def test_the_joined_node_keeps_the_kubelets_share() -> None:
    node = template_node(group({}))
    assert kubelet_reserved_cpu(4) == pytest.approx(0.08)
    assert node.joined["cpu"] == pytest.approx(3.92)
    # 11 MiB x 58 pods + 255 MiB reserved, 100 MiB eviction threshold
    assert node.joined["memory"] == 16 * GIB - (11 * 58 + 255 + 100) * 1024**2
    # Four 1-core agents fit the template's 4 cores, not the joined node's 3.92.
    missing = shortfalls(node, [{"cpu": 1.0}] * 4)
    assert [m.resource for m in missing] == ["cpu"] and "a joined node allocates 3920m" in str(missing[0])


def test_a_pod_lands_only_where_its_affinity_and_tolerations_allow() -> None:
    labelled = template_node(group({f"{TEMPLATE_TAG}/label/role": "gpu", **GPU_TAINT_TAG}))
    assert labelled.taints == (NodeTaint("nvidia.com/gpu", "true", "NoSchedule"),)
    assert may_land(TRITON, labelled)
    assert not may_land({**TRITON, "tolerations": []}, labelled)
    assert not may_land(TRITON, template_node(group(GPU_TAINT_TAG)))  # no label: affinity fails
    # What EKS returns for the managed group counts when the autoscaler may ask for it.
    managed = template_node(group(GPU_TAINT_TAG, managed_labels={"role": "gpu"}))
    assert may_land(TRITON, managed)
    assert may_land({"tolerations": [{"operator": "Exists"}]}, labelled)
    assert not may_land({"nodeSelector": {"role": "cpu"}}, labelled)
