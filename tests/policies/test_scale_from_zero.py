"""Scale from zero for every GPU group of prod and prod-dr: the template-node policy on the stacks as
planned, on the stacks as main planned them (no ephemeral-storage tag), and what gpu-capacity counts."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from inferstack.policies.scale_from_zero import fits, node_template_fits, reachable_groups
from inferstack.policies.stack import Stack, StackResource, ordered_after
from inferstack.policies.stack_capacity import gpu_capacity, zone_loss
from inferstack.stacks import offline
from inferstack.stacks.offline import Recorded
from inferstack.stacks.plan import preview_json
from tests.conftest import ROOT
from tests.harness import DEPLOYER
from tests.policies.fixtures import without_ephemeral_storage_tags
from tests.stacks.test_failover_stack import ENDPOINTS

STACKS = {"prod": DEPLOYER, "prod-dr": DEPLOYER | {"inferstack:failover.zone": "example.com"} | ENDPOINTS}


def as_stack(resources: Iterable[Recorded]) -> Stack:
    """The resources as the pack's stack policies see them (pack.stack_resource, without the proxies)."""
    return Stack(
        StackResource(
            r.type,
            r.name,
            r.urn,
            r.inputs,
            ordered_after(r.dependencies, r.property_dependencies),
            r.property_dependencies,
            r.custom_timeouts,
            r.provider.rsplit("::", 1)[0] if r.provider else "",
        )
        for r in resources
    )


@pytest.fixture(scope="module", params=sorted(STACKS))
def planned(request: pytest.FixtureRequest) -> list[Recorded]:
    return offline.run_stack(ROOT / "stacks", request.param, STACKS[request.param]).resources


def test_every_pod_fits_every_gpu_group_it_may_land_on(planned: list[Recorded]) -> None:
    stack = as_stack(planned)
    found = fits(stack)
    groups = {g.urn for g, _, _ in stack.gpu_groups()}
    assert groups and {f.group.urn for f in found} == groups  # every GPU group has a Triton pod to take
    assert node_template_fits(stack, {}) == []
    for fit in found:
        # the device plugin, DCGM, node exporter, Fluent Bit and the four add-ons' agents
        assert len(fit.agents) >= 7, fit.agents
    assert reachable_groups(stack) == groups


def test_without_the_ephemeral_storage_tag_no_gpu_group_starts_from_zero(planned: list[Recorded]) -> None:
    """main's node groups: every Triton pod asks for 44 GiB of ephemeral storage, the template has 0."""
    stack = as_stack(without_ephemeral_storage_tags(planned))
    problems = node_template_fits(stack, {})
    assert len(problems) == len(stack.gpu_groups())
    assert all(
        re.search(r"ephemeral-storage: needs [1-9][0-9.]*Gi, but the autoscaler's template offers 0\.00Gi", m)
        for m, _ in problems
    )
    # ... and the capacity policies count none of those groups.
    assert reachable_groups(stack) == set()
    assert "node group the autoscaler can start from zero" in gpu_capacity(stack, {})[0][0]
    assert stack.gpu_capacity_by_zone() == {}
    assert zone_loss(stack, {"minSurvivingShare": 0.5}) == []  # nothing left to lose: gpu-capacity says it


def test_one_group_out_of_reach_is_left_out_of_the_capacity(planned: list[Recorded]) -> None:
    full = as_stack(planned)
    group, gpus, (zone,) = next(g for g in full.gpu_groups() if "gpu-spot" in g[0].name)
    one_off = as_stack(without_ephemeral_storage_tags(planned, group.name))
    assert reachable_groups(one_off) == reachable_groups(full) - {group.urn}
    # gpus: the group's GPUs at its maximum size
    assert one_off.gpu_capacity_by_zone()[zone] == full.gpu_capacity_by_zone()[zone] - gpus
    assert [urn for _, urn in node_template_fits(one_off, {})] == [group.urn]


def agent(cpu_m: int) -> Recorded:
    """One more node agent on every node, asking for ``cpu_m`` millicores."""
    return Recorded(
        type="kubernetes:apps/v1:DaemonSet",
        name="one-more-agent",
        inputs={
            "metadata": {"name": "one-more-agent", "namespace": "kube-system"},
            "spec": {
                "template": {
                    "spec": {
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "a", "resources": {"requests": {"cpu": f"{cpu_m}m"}}}],
                    }
                }
            },
        },
        parent_urn="",
        custom=True,
        urn="urn:pulumi:prod::inferstack::kubernetes:apps/v1:DaemonSet::one-more-agent",
    )


def test_one_more_agent_fits_only_in_the_cpu_left(planned: list[Recorded]) -> None:
    """What a GPU node keeps free after Triton, its front and the DaemonSets (a g5.xlarge kept 90m with
    the front's old fixed 0.5 CPU): an agent asking for that fits, one asking for a millicore more does not."""
    problems = node_template_fits(as_stack([*planned, agent(4000)]), {})
    found = re.search(r"cpu: needs (\d+)m, but .* a joined node allocates (\d+)m", problems[0][0])
    assert found is not None
    left = int(found.group(2)) - (int(found.group(1)) - 4000)
    assert 0 < left < 1000
    assert node_template_fits(as_stack([*planned, agent(left)]), {}) == []
    too_much = node_template_fits(as_stack([*planned, agent(left + 1)]), {})
    assert too_much and all("cpu: needs" in m for m, _ in too_much)


def test_plan_json_shows_the_ephemeral_storage_tags(planned: list[Recorded]) -> None:
    plan = preview_json(offline.Recording(list(planned)), "prod", {})
    tags = [
        s["newState"]["inputs"]["tag"]
        for s in plan["steps"]
        if s["newState"]["type"] == "aws:autoscaling/tag:Tag"
        and s["newState"]["inputs"]["tag"]["key"].endswith("node-template/resources/ephemeral-storage")
    ]
    groups = [s["newState"] for s in plan["steps"] if s["newState"]["type"] == "aws:eks/nodeGroup:NodeGroup"]
    assert len(tags) == len(groups) and {t["value"] for t in tags} <= {"177Gi", "43Gi"}
    for group in groups:
        assert group["inputs"]["tags"]["k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage"]
