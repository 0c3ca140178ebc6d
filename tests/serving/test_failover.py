"""Failover on one machine: two local runtimes stand for two regions, a DNS-free stand-in for Route 53.

The health-check rule, the record choice and the client cache are checked first with a fake clock;
then the primary's Triton is killed under a steady stream of requests, and traffic must reach the
standby within interval x threshold + TTL, with every request answered (some after retries).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import TritonClient, TritonUnavailable
from inferstack.serving.client.failover import (
    CachedResolver,
    FailoverRecords,
    HealthCheck,
    HealthChecker,
    Served,
    call_with_failover,
    http_ready_probe,
    local_timing,
)
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.repository import generate_inputs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_status_flips_only_after_threshold_results_in_a_row() -> None:
    check = HealthCheck("primary:8000", failure_threshold=3)
    assert [check.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert check.healthy  # a success in between restarts the count
    assert check.record(False) is True and not check.healthy  # the third failure in a row
    assert [check.record(ok) for ok in (True, True)] == [False, False] and not check.healthy
    assert check.record(True) is True and check.healthy  # recovery takes three in a row too


def test_records_answer_the_primary_unless_only_it_is_down() -> None:
    primary, secondary = HealthCheck("p", 1), HealthCheck("s", 1)
    records = FailoverRecords(primary, secondary)
    assert records.answer() == "p"
    primary.record(False)
    assert records.answer() == "s"
    secondary.record(False)
    assert records.answer() == "p"  # both down: Route 53 answers the primary


def test_the_client_keeps_an_answer_for_the_ttl() -> None:
    clock = FakeClock()
    primary = HealthCheck("p", 1)
    resolver = CachedResolver(FailoverRecords(primary, HealthCheck("s", 1)), ttl_s=5, clock=clock)
    assert resolver.resolve() == "p"
    primary.record(False)
    clock.now = 4.9
    assert resolver.resolve() == "p"  # cached
    clock.now = 5.0
    assert resolver.resolve() == "s"


def test_a_call_is_retried_on_the_new_answer_until_its_deadline() -> None:
    clock = FakeClock()
    primary = HealthCheck("p", 1)
    resolver = CachedResolver(FailoverRecords(primary, HealthCheck("s", 1)), ttl_s=1, clock=clock)

    def call(endpoint: str) -> str:
        if endpoint == "p":
            primary.record(False)  # the check notices on the first failure
            raise TritonUnavailable("refused")
        return f"answer from {endpoint}"

    result, served = call_with_failover(
        resolver, call, deadline_s=5, backoff_s=0.4, clock=clock, sleep=clock.sleep
    )
    assert (result, served) == ("answer from s", Served("s", 4))  # p, p, p (cached for 1 s), then s
    primary.healthy, secondary_down = True, HealthCheck("s", 1)
    never = CachedResolver(FailoverRecords(HealthCheck("p", 1), secondary_down), ttl_s=1, clock=clock)
    with pytest.raises(TritonUnavailable):
        call_with_failover(never, call, deadline_s=1, backoff_s=0.4, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize(
    ("interval", "threshold", "ttl", "field"),
    [(0, 3, 1, "interval_s"), (0.5, 0, 1, "failure_threshold"), (0.5, 3, -1, "ttl_s")],
)
def test_local_timing_rejects_nonsense(interval: float, threshold: int, ttl: float, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        local_timing(interval, threshold, ttl)
    assert caught.value.field == field


# --- two regions, for real -----------------------------------------------------------------------

INTERVAL_S, THRESHOLD, TTL_S = 0.5, 3, 1.0
PROBE_TIMEOUT_S = 0.4
# The machine is shared and the client calls one at a time: a call in flight when the answer
# changes, and thread scheduling, may add this much to the bound.
SCHEDULING_SLACK_S = 1.0


@pytest.fixture(scope="module")
def regions(
    tmp_path_factory: pytest.TempPathFactory, triton_present: None
) -> Iterator[tuple[LocalRuntime, LocalRuntime]]:
    repository = build_demo_repository(tmp_path_factory.mktemp("repository"))
    with (
        LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("primary")) as primary,
        LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("standby")) as standby,
    ):
        yield primary, standby


def kill_triton(runtime: LocalRuntime) -> None:
    """The region goes away at once (SIGKILL): no drain, no goodbye."""
    (triton,) = [c for c in runtime.children if c.name == "triton-0"]
    os.killpg(triton.process.pid, signal.SIGKILL)
    triton.process.wait(timeout=10)


def test_traffic_moves_to_the_standby_within_the_computed_time_and_no_request_is_lost(
    regions: tuple[LocalRuntime, LocalRuntime],
) -> None:
    primary, standby = regions
    endpoints = {r.http_url.removeprefix("http://"): name for r, name in ((primary, "p"), (standby, "s"))}
    timing = local_timing(INTERVAL_S, THRESHOLD, TTL_S)
    checks = [HealthCheck(e, THRESHOLD) for e in endpoints]
    resolver = CachedResolver(FailoverRecords(*checks), TTL_S)
    model = primary.models[0]
    inputs = generate_inputs(model)
    log: list[tuple[float, Served, dict[str, Any]]] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        # Clients live in this thread: tritonclient's HTTP client is bound to the thread that made it.
        clients: dict[str, TritonClient] = {}

        def infer(endpoint: str) -> dict[str, Any]:
            client = clients.setdefault(endpoint, TritonClient(endpoint, timeout_s=2.0))
            return client.infer(model.name, inputs)

        try:
            while not stop.is_set():
                result, served = call_with_failover(
                    resolver, infer, deadline_s=timing.rto_s + 5, backoff_s=0.1
                )
                log.append((time.monotonic(), served, result))
                time.sleep(0.02)
        except BaseException as error:  # a lost request: the test fails on it below
            failed.append(error)
        finally:
            for client in clients.values():
                client.close()

    def on_standby() -> bool:
        return bool(log) and endpoints[log[-1][1].endpoint] == "s"

    with HealthChecker(checks, INTERVAL_S, http_ready_probe(PROBE_TIMEOUT_S)) as checker:
        sender = threading.Thread(target=traffic)
        sender.start()
        time.sleep(1.5)  # steady traffic on the primary first
        killed_at = time.monotonic()
        kill_triton(primary)
        deadline = killed_at + timing.rto_s + 5
        while time.monotonic() < deadline and not on_standby():
            time.sleep(0.05)
        time.sleep(1.0)  # and steady on the standby after
        stop.set()
        sender.join(timeout=timing.rto_s + 10)
        changes = list(checker.changes)

    assert not failed, f"a request was lost despite retries: {failed}"
    before = [s for t, s, _ in log if t < killed_at]
    after = [(t, s) for t, s, _ in log if t >= killed_at]
    assert before and all(endpoints[s.endpoint] == "p" for s in before)
    moved = [t for t, s in after if endpoints[s.endpoint] == "s"]
    assert moved, "traffic never reached the standby"
    # Once moved, it stays: the primary is down and its check stays unhealthy.
    assert all(endpoints[s.endpoint] == "s" for t, s in after if t >= moved[0])
    took = moved[0] - killed_at
    assert took <= timing.rto_s + PROBE_TIMEOUT_S + SCHEDULING_SLACK_S, (took, timing.rto_s)
    # The check needed THRESHOLD failures one interval apart: (THRESHOLD - 1) intervals at least after
    # the first failing probe, which may have been in flight when the primary died.
    (down,) = [c for c in changes if endpoints[c.endpoint] == "p" and not c.healthy]
    seen = down.at - killed_at
    assert (THRESHOLD - 1) * INTERVAL_S - PROBE_TIMEOUT_S <= seen <= timing.detection_s + PROBE_TIMEOUT_S, (
        seen
    )
    # Requests in flight at the failure were retried, not lost, and every answer is the model's answer.
    assert any(s.attempts > 1 for _, s in after)
    expected = log[0][2]
    for _, _, result in log:
        for name, value in expected.items():
            np.testing.assert_allclose(result[name], value, rtol=0, atol=1e-6)
