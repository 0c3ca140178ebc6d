"""The stack policies on a `capacity: karpenter` stack, through the pack's real Analyzer: it passes prod's
pack config as it is, and each capacity, zone and ordering rule refuses it once its NodePools are
changed the way that rule is about."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from inferstack.policies.analyzer import PolicyPackProcess
from inferstack.policies.pack_config import load, stack_config_path
from inferstack.stacks.offline import Recorded, run_stack
from tests.conftest import ROOT
from tests.harness import DEPLOYER

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackProcess]:
    with PolicyPackProcess() as running:
        config = stack_config_path("prod")
        assert config is not None
        running.configure(load(config))
        yield running


@pytest.fixture(scope="module")
def stack() -> list[Recorded]:
    return run_stack(ROOT / "stacks", "prod", {**DEPLOYER, "inferstack:capacity": "karpenter"}).resources


def reasons(pack: PolicyPackProcess, resources: list[Recorded]) -> list[str]:
    found = [v for r in resources for v in pack.analyze(r.type, r.inputs, name=r.name, urn=r.urn)]
    found += pack.analyze_stack(resources)
    return [f"{v.policy}: {v.reason}" for v in found]


def with_pools(stack: list[Recorded], change: Any) -> list[Recorded]:
    changed = []
    for resource in stack:
        if resource.type == NODE_POOL:
            inputs = {**resource.inputs, "spec": {**resource.inputs["spec"]}}
            change(inputs["spec"])
            resource = replace(resource, inputs=inputs)
        changed.append(resource)
    return changed


def zones_to(zones: list[str]) -> Any:
    def change(spec: dict[str, Any]) -> None:
        template = {**spec["template"], "spec": {**spec["template"]["spec"]}}
        template["spec"]["requirements"] = [
            {**r, "values": zones} if r["key"] == "topology.kubernetes.io/zone" else r
            for r in template["spec"]["requirements"]
        ]
        spec["template"] = template

    return change


def test_the_karpenter_stack_passes_prods_pack_config(pack: PolicyPackProcess, stack: list[Recorded]) -> None:
    assert [r for r in stack if r.type == NODE_POOL]
    assert reasons(pack, stack) == []


def test_pools_too_small_for_the_services_are_refused(pack: PolicyPackProcess, stack: list[Recorded]) -> None:
    found = reasons(pack, with_pools(stack, lambda spec: spec.update(limits={"nvidia.com/gpu": "1"})))
    assert any(r.startswith("gpu-capacity:") and "losing" in r for r in found), found


def test_pools_in_one_zone_are_refused(pack: PolicyPackProcess, stack: list[Recorded]) -> None:
    found = reasons(pack, with_pools(stack, zones_to(["us-east-1a"])))
    assert any(r.startswith("zone-loss:") and "one zone down" in r for r in found), found


def test_pools_not_after_the_crd_release_are_refused(pack: PolicyPackProcess, stack: list[Recorded]) -> None:
    raced = [replace(r, dependencies=()) if r.type == NODE_POOL else r for r in stack]
    found = reasons(pack, raced)
    assert any(r.startswith("crd-ordered:") and "karpenter-crd" in r for r in found), found


def test_a_pool_disrupting_many_nodes_is_refused_in_prod(
    pack: PolicyPackProcess, stack: list[Recorded]
) -> None:
    found = reasons(
        pack, with_pools(stack, lambda spec: spec.update(disruption={"budgets": [{"nodes": "20%"}]}))
    )
    assert any(r.startswith("karpenter-disruption-bounded:") and "20%" in r for r in found), found


def test_a_queue_missing_an_event_is_refused(pack: PolicyPackProcess, stack: list[Recorded]) -> None:
    spot = next(
        r for r in stack if r.type == "aws:cloudwatch/eventRule:EventRule" and "spot-interruption" in r.name
    )
    found = reasons(pack, [r for r in stack if r.urn != spot.urn])
    assert any(
        r.startswith("karpenter-interruptions:") and "EC2 Spot Instance Interruption Warning" in r
        for r in found
    ), found
