"""Route 53 failover without DNS: the same health-check rule, record choice and TTL, on loopback.

What the cluster gets from Route 53 (``inferstack.infra.failover``), this module does in-process so
it can be shown on one machine with two local runtimes standing for two regions:
- a health check probes ``/v2/health/ready`` every ``interval_s`` and changes status only after
  ``failure_threshold`` results in a row say otherwise (Route 53's rule, both ways);
- the failover records answer the PRIMARY endpoint while its check is healthy, else the SECONDARY
  (and the PRIMARY again when both are unhealthy, as Route 53 does);
- a client caches the answer for ``ttl_s``, as a resolver does, and retries a failed call against
  whatever the (cached) answer is then, until a deadline.
So traffic leaves a failed primary within ``interval_s x failure_threshold + ttl_s`` (plus the probe's
own timeout when the primary hangs instead of refusing), the bound ``FailoverTiming.rto_s`` states.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from inferstack.infra.errors import InvalidInput
from inferstack.infra.failover_timing import HEALTH_PATH, FailoverTiming
from inferstack.serving.client.client import TritonUnavailable

T = TypeVar("T")
Clock = Callable[[], float]
Probe = Callable[[str], bool]


def http_ready_probe(timeout_s: float) -> Probe:
    """Healthy when ``http://<endpoint>/v2/health/ready`` answers 2xx within ``timeout_s``."""

    def probe(endpoint: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{endpoint}{HEALTH_PATH}", timeout=timeout_s) as reply:
                return 200 <= int(reply.status) < 300
        except (OSError, urllib.error.URLError):
            return False

    return probe


@dataclass
class HealthCheck:
    """One endpoint's status: it flips after ``failure_threshold`` results in a row against it."""

    endpoint: str
    failure_threshold: int
    healthy: bool = True  # Route 53 takes a new check as healthy until it has results
    _streak: int = field(default=0, init=False)

    def record(self, ok: bool) -> bool:
        """Add one probe result; True when the status changed."""
        if ok == self.healthy:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak < self.failure_threshold:
            return False
        self.healthy, self._streak = ok, 0
        return True


@dataclass(frozen=True)
class FailoverRecords:
    """A PRIMARY and a SECONDARY record for one name, each with its health check."""

    primary: HealthCheck
    secondary: HealthCheck

    def answer(self) -> str:
        if self.primary.healthy or not self.secondary.healthy:
            return self.primary.endpoint
        return self.secondary.endpoint


@dataclass(frozen=True)
class StatusChange:
    """An endpoint turning healthy or unhealthy, and when."""

    at: float
    endpoint: str
    healthy: bool


class HealthChecker:
    """Probes every check each ``interval_s`` on a background thread; ``with HealthChecker(...):``."""

    def __init__(
        self, checks: Sequence[HealthCheck], interval_s: float, probe: Probe, clock: Clock = time.monotonic
    ) -> None:
        if interval_s <= 0:
            raise InvalidInput("interval_s", interval_s, "a number of seconds > 0")
        self.checks = list(checks)
        self.interval_s = interval_s
        self.probe = probe
        self.clock = clock
        self.changes: list[StatusChange] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-checker", daemon=True)

    def _run(self) -> None:
        next_round = self.clock()
        while not self._stop.is_set():
            for check in self.checks:
                if check.record(self.probe(check.endpoint)):
                    self.changes.append(StatusChange(self.clock(), check.endpoint, check.healthy))
            next_round += self.interval_s
            self._stop.wait(max(0.0, next_round - self.clock()))

    def __enter__(self) -> HealthChecker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 10)


class CachedResolver:
    """What a client's resolver does with a record: keep the answer for ``ttl_s``, then ask again."""

    def __init__(self, records: FailoverRecords, ttl_s: float, clock: Clock = time.monotonic) -> None:
        if ttl_s < 0:
            raise InvalidInput("ttl_s", ttl_s, "a number of seconds >= 0")
        self.records = records
        self.ttl_s = ttl_s
        self.clock = clock
        self._answer: str | None = None
        self._expires = 0.0

    def resolve(self) -> str:
        now = self.clock()
        if self._answer is None or now >= self._expires:
            self._answer, self._expires = self.records.answer(), now + self.ttl_s
        return self._answer


@dataclass(frozen=True)
class Served:
    """Where a call that succeeded was served, and how many tries it took."""

    endpoint: str
    attempts: int


def call_with_failover(
    resolver: CachedResolver,
    call: Callable[[str], T],
    *,
    deadline_s: float,
    backoff_s: float,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, Served]:
    """``call(endpoint)`` on the resolved endpoint; an unreachable endpoint is retried after
    ``backoff_s`` on whatever the name resolves to then, until ``deadline_s`` has passed."""
    give_up = clock() + deadline_s
    attempts = 0
    while True:
        endpoint = resolver.resolve()
        attempts += 1
        try:
            return call(endpoint), Served(endpoint, attempts)
        except TritonUnavailable:
            if clock() + backoff_s > give_up:
                raise
            sleep(backoff_s)


def local_timing(interval_s: float, failure_threshold: int, ttl_s: float) -> FailoverTiming:
    """The same arithmetic at loopback scale (sub-second intervals Route 53 does not offer)."""
    for name, value in (("interval_s", interval_s), ("ttl_s", ttl_s)):
        if value <= 0:
            raise InvalidInput(name, value, "a number of seconds > 0")
    if failure_threshold < 1:
        raise InvalidInput("failure_threshold", failure_threshold, "an integer >= 1")
    return FailoverTiming(interval_s, failure_threshold, ttl_s)
