"""Scale from zero for every GPU group of prod and prod-dr: the template-node policy on the stacks as
planned, on the stacks as main planned them (no ephemeral-storage tag), and what gpu-capacity counts."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from inferstack.policies.scale_from_zero import fits, node_template_fits, reachable_groups
from inferstack.policies.stack_rules import Stack, StackResource, gpu_capacity, zone_loss
from inferstack.stacks import offline
from inferstack.stacks.offline import Recorded
from tests.conftest import ROOT
from tests.harness import DEPLOYER
from tests.policies.fixtures import without_ephemeral_storage_tags

STACKS = {"prod": DEPLOYER, "prod-dr": DEPLOYER | {"inferstack:failover.zone": "example.com"}}


def as_stack(resources: Iterable[Recorded]) -> Stack:
    """The resources as the pack's stack policies see them (pack.stack_resource, without the proxies)."""
    return Stack(
        StackResource(
            r.type,
            r.name,
            r.urn,
            r.inputs,
            tuple(
                dict.fromkeys([*r.dependencies, *(u for v in r.property_dependencies.values() for u in v)])
            ),
            r.property_dependencies,
            r.custom_timeouts,
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
        "ephemeral-storage: needs 44.00Gi, but the autoscaler's template offers 0.00Gi" in m
        for m, _ in problems
    )
    # ... and the capacity policies count none of those groups.
    assert reachable_groups(stack) == set()
    assert "no GPU node group the autoscaler can start from zero" in gpu_capacity(stack, {})[0][0]
    assert stack.gpu_capacity_by_zone() == {}
    assert zone_loss(stack, {"minSurvivingShare": 0.5}) == []  # nothing left to lose: gpu-capacity says it


def test_one_group_out_of_reach_is_left_out_of_the_capacity(planned: list[Recorded]) -> None:
    full = as_stack(planned)
    group, gpus, (zone,) = next(g for g in full.gpu_groups() if "gpu-spot" in g[0].name)
    one_off = as_stack(without_ephemeral_storage_tags(planned, group.name))
    assert reachable_groups(one_off) == reachable_groups(full) - {group.urn}
    max_size = group.props["scalingConfig"]["maxSize"]
    assert one_off.gpu_capacity_by_zone()[zone] == full.gpu_capacity_by_zone()[zone] - max_size * gpus
    assert [urn for _, urn in node_template_fits(one_off, {})] == [group.urn]
