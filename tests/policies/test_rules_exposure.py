"""public-load-balancer-ranges: the prod-dr stack's endpoints pass; the same Service without its
ranges fails, through the real Analyzer too."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from inferstack.policies.analyzer import PolicyPackProcess
from inferstack.policies.rules_exposure import SERVICE, public_load_balancer_ranges
from inferstack.stacks import offline
from tests.stacks.test_failover_stack import STACKS, STANDBY


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackProcess]:
    with PolicyPackProcess() as running:
        yield running


@pytest.fixture(scope="module")
def endpoint() -> dict[str, Any]:
    recording = offline.run_stack(STACKS, "prod-dr", STANDBY)
    inputs: dict[str, Any] = recording.one(SERVICE, "ranker-public-standby").inputs
    return inputs


def test_the_standby_endpoint_passes_and_fails_without_ranges(endpoint: dict[str, Any]) -> None:
    assert public_load_balancer_ranges(SERVICE, endpoint, {}) == []
    open_to_all = copy.deepcopy(endpoint)
    open_to_all["spec"].pop("loadBalancerSourceRanges")
    (problem,) = public_load_balancer_ranges(SERVICE, open_to_all, {})
    assert "ranker/ranker-public" in problem and "0.0.0.0/0" in problem
    internal = copy.deepcopy(open_to_all)
    internal["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] = "internal"
    assert public_load_balancer_ranges(SERVICE, internal, {}) == []
    by_annotation = copy.deepcopy(open_to_all)
    by_annotation["metadata"]["annotations"]["service.beta.kubernetes.io/load-balancer-source-ranges"] = (
        "10.0.0.0/8"
    )
    assert public_load_balancer_ranges(SERVICE, by_annotation, {}) == []


def test_the_analyzer_refuses_it(pack: PolicyPackProcess, endpoint: dict[str, Any]) -> None:
    pack.configure({})
    open_to_all = copy.deepcopy(endpoint)
    open_to_all["spec"].pop("loadBalancerSourceRanges")
    found = [
        v
        for v in pack.analyze(SERVICE, open_to_all, name="ranker-public")
        if v.policy == "public-load-balancer-ranges"
    ]
    assert found and found[0].mandatory
    assert not [
        v
        for v in pack.analyze(SERVICE, endpoint, name="ranker-public")
        if v.policy == "public-load-balancer-ranges"
    ]
