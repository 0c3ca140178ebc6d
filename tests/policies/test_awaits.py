"""prod and prod-dr: every awaited resource's timeout covers what it waits for; on main's timeouts it
did not. And the timeouts reach `plan --json` as the engine's state keeps them."""

from __future__ import annotations

import dataclasses

import pytest

from inferstack.components.awaits import (
    MARGIN_S,
    NODE_START_S,
    TRITON_IMAGE_PULL_S,
    rollout_timeout_s,
)
from inferstack.policies.analyzer import PolicyPackProcess
from inferstack.policies.awaits import await_covers_wait
from inferstack.stacks import offline
from inferstack.stacks.offline import Recorded, duration_s
from inferstack.stacks.plan import preview_json
from tests.conftest import ROOT
from tests.policies.test_scale_from_zero import STACKS, as_stack


@pytest.fixture(scope="module", params=sorted(STACKS))
def planned(request: pytest.FixtureRequest) -> list[Recorded]:
    return offline.run_stack(ROOT / "stacks", request.param, STACKS[request.param]).resources


def test_every_awaited_resource_has_the_time_it_needs(planned: list[Recorded]) -> None:
    assert await_covers_wait(as_stack(planned), {}) == []
    triton = next(r for r in planned if r.name == "ranker-deployment")
    pod_start = NODE_START_S + TRITON_IMAGE_PULL_S + 600 + 600  # the fill's manifest wait, the load timeout
    assert triton.custom_timeouts["create"] == pod_start + MARGIN_S
    # 12 replicas, one surge pod at a time, each retiring an old pod after its grace period
    assert triton.custom_timeouts["update"] == rollout_timeout_s(pod_start, max_replicas=12, grace_s=105)
    assert (
        next(r for r in planned if r.name == "ranker-svc").custom_timeouts["create"] == pod_start + MARGIN_S
    )


def test_with_mains_timeouts_the_policy_refuses(planned: list[Recorded]) -> None:
    """main: Services at the default 10 minutes, the Deployment at one pod start for its whole rollout
    (node, image, the fill's 600 s manifest wait, 600 s model load)."""
    pod_start = NODE_START_S + TRITON_IMAGE_PULL_S + 600 + 600
    main = [
        dataclasses.replace(r, custom_timeouts={"create": pod_start + 60, "update": pod_start + 60})
        if r.name == "ranker-deployment"
        else dataclasses.replace(r, custom_timeouts={})
        for r in planned
    ]
    found = [message for message, _ in await_covers_wait(as_stack(main), {})]
    assert any("Service ranker-svc waits for a ready pod, up to 2100 s on create" in m for m in found)
    assert any("Deployment ranker-deployment waits for its pods, up to 26460 s on update" in m for m in found)


def test_the_other_regions_pods_are_never_waited_for() -> None:
    standby = offline.run_stack(ROOT / "stacks", "prod-dr", STACKS["prod-dr"]).resources
    public = [r for r in standby if r.name.startswith("ranker-public-")]
    assert len(public) == 2
    for service in public:
        assert (
            service.inputs["metadata"]["annotations"]["pulumi.com/waitFor"]
            == "jsonpath={.status.loadBalancer.ingress}"
        )
    # Without the waitFor, the primary's Service waits on pods of the primary's cluster, which the
    # standby stack does not create.
    plain = [
        dataclasses.replace(r, inputs={**r.inputs, "metadata": {**r.inputs["metadata"], "annotations": {}}})
        if r.name == "ranker-public-primary"
        else r
        for r in standby
    ]
    found = [m for m, _ in await_covers_wait(as_stack(plain), {}) if "ranker-public-primary" in m]
    assert found == [
        "Service ranker-public-primary waits for ready pods no workload of this stack (in this cluster) "
        "creates: skip its await (pulumi.com/skipAwait) or wait for what it needs (pulumi.com/waitFor)"
    ]


def test_plan_json_carries_custom_timeouts_as_the_state_does(planned: list[Recorded]) -> None:
    plan = preview_json(offline.Recording(list(planned)), "prod", {})
    states = {s["newState"]["urn"]: s["newState"] for s in plan["steps"]}
    triton = next(r for r in planned if r.name == "ranker-deployment")
    assert states[triton.urn]["customTimeouts"] == {"create": 2160.0, "update": 26520.0}
    # Resources without the option have none, as the engine leaves empty fields out.
    assert all("customTimeouts" not in s or s["customTimeouts"] for s in states.values())


@pytest.mark.parametrize(("text", "seconds"), [("1560s", 1560.0), ("26m", 1560.0), ("1h2m3s", 3723.0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_the_pack_sees_timeouts_and_clusters_through_the_analyzer() -> None:
    """What the engine hands the pack over gRPC (customTimeouts, the provider) reaches the policy."""
    standby = offline.run_stack(ROOT / "stacks", "prod-dr", STACKS["prod-dr"]).resources
    plain = [
        dataclasses.replace(r, inputs={**r.inputs, "metadata": {**r.inputs["metadata"], "annotations": {}}})
        if r.name == "ranker-public-primary"
        else r
        for r in standby
    ]
    with PolicyPackProcess() as pack:
        pack.configure({})
        assert [v for v in pack.analyze_stack(standby) if v.policy == "await-covers-wait"] == []
        found = [v.reason for v in pack.analyze_stack(plain) if v.policy == "await-covers-wait"]
    assert len(found) == 1 and "ranker-public-primary waits for ready pods no workload" in found[0]
