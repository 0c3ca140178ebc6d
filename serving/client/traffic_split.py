"""The client side of a canary release: a weighted split between two versions, and mirroring.

Each request goes to one version of the model, chosen by the release's weight (see
``components/canary.py`` for why the split is made here and not by replica counts). The choice is
deterministic error diffusion, not a coin flip: after N requests the canary has answered
round(N x weight) of them, at any N, so a 1 % canary gets exactly one request in a hundred.

A share of the requests the stable version answers is also sent to the canary (mirrored): on a
background thread, never delaying or changing the caller's answer. The canary's answer is compared
with the stable one and only counted. A mirror that cannot keep up drops work (counted) rather than
queueing without bound.

Triton counts what each version served (``nv_inference_request_success{version=...}``):
``version_counts`` reads those from its metrics endpoint, the same numbers the canary alerts use.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from inferstack.components.canary import CanaryRelease, check_canary
from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.answers import compare
from inferstack.serving.client.client import Protocol, TritonClient

Array = npt.NDArray[Any]
_MAX_PENDING_MIRRORS = 64
_METRIC_LINE = re.compile(r"^(nv_inference_request_(?:success|failure))\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def release_from_document(document: str | Mapping[str, Any]) -> CanaryRelease:
    """The release described by a ``<service>-traffic`` ConfigMap's ``split.json`` (text or parsed)."""
    data = json.loads(document) if isinstance(document, str) else dict(document)
    keys = {"model", "stable_version", "canary_version", "weight_percent", "mirror_percent"}
    if not isinstance(data, dict) or set(data) != keys:
        raise InvalidInput("split.json", data, f"an object with exactly the keys {sorted(keys)}")
    release = CanaryRelease(**data)
    check_canary(release, [release.model])
    return release


@dataclass
class SplitStats:
    """What the split did: answers per version, and how the mirrored canary answers compared."""

    stable: int = 0
    canary: int = 0
    mirrored: int = 0  # stable requests also sent to the canary and compared
    mirror_errors: int = 0  # the canary failed a mirrored request
    mirror_dropped: int = 0  # not mirrored: the mirror thread was behind
    mirror_mismatches: int = 0  # compared answers further apart than the tolerance
    mirror_max_abs_diff: float = 0.0


class _Diffusion:
    """Yes for ``percent`` of calls, spread evenly: the running count never strays a call from exact."""

    def __init__(self, percent: float) -> None:
        self.share = percent / 100
        self.credit = 0.0

    def next(self) -> bool:
        self.credit += self.share
        if self.credit >= 1 - 1e-9:
            self.credit -= 1
            return True
        return False


class TrafficSplit:
    """Inference through a canary release: ``infer`` answers from the stable or the canary version.

    Use as a context manager (or call ``close``): closing waits for the mirrors in flight. One
    ``TrafficSplit`` per thread, like ``TritonClient``.
    """

    def __init__(
        self,
        urls: str | list[str],
        release: CanaryRelease,
        *,
        protocol: Protocol = "http",
        tolerance: float = 1e-5,
    ) -> None:
        check_canary(release, [release.model])
        if not tolerance >= 0:
            raise InvalidInput("tolerance", tolerance, "a number >= 0")
        self.release = release
        self.tolerance = tolerance
        self.stats = SplitStats()
        self._client = TritonClient(urls, protocol=protocol)
        self._urls, self._protocol = urls, protocol
        self._to_canary = _Diffusion(release.weight_percent)
        self._mirror = _Diffusion(release.mirror_percent)
        self._lock = threading.Lock()
        self._pending: list[Future[None]] = []
        # One thread, one client: tritonclient's HTTP client belongs to the thread that uses it.
        self._mirrors = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror")
        self._mirror_client: TritonClient | None = None

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        release = self.release
        if self._to_canary.next():
            answer = self._client.infer(release.model, inputs, version=release.canary_version)
            self.stats.canary += 1
            return answer
        answer = self._client.infer(release.model, inputs, version=release.stable_version)
        self.stats.stable += 1
        if self._mirror.next():
            self._pending = [f for f in self._pending if not f.done()]
            if len(self._pending) >= _MAX_PENDING_MIRRORS:
                with self._lock:
                    self.stats.mirror_dropped += 1
            else:
                self._pending.append(self._mirrors.submit(self._mirrored, dict(inputs), answer))
        return answer

    def _mirrored(self, inputs: dict[str, Array], stable: dict[str, Array]) -> None:
        if self._mirror_client is None:
            self._mirror_client = TritonClient(self._urls, protocol=self._protocol)
        try:
            canary = self._mirror_client.infer(
                self.release.model, inputs, version=self.release.canary_version
            )
        except Exception:  # the canary's failure is a finding to count, never the caller's error
            with self._lock:
                self.stats.mirror_errors += 1
            return
        difference = compare(stable, canary)
        with self._lock:
            self.stats.mirrored += 1
            self.stats.mirror_max_abs_diff = max(self.stats.mirror_max_abs_diff, difference)
            self.stats.mirror_mismatches += difference > self.tolerance

    def close(self) -> None:
        """Wait for the mirrors in flight, then close both clients."""

        def close_mirror_client() -> None:
            if self._mirror_client is not None:
                self._mirror_client.close()

        self._mirrors.submit(close_mirror_client)
        self._mirrors.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> TrafficSplit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def version_counts(metrics_url: str, model: str) -> dict[int, dict[str, float]]:
    """Triton's own count of successful and failed requests per version of ``model``, from /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts: dict[int, dict[str, float]] = {}
    for metric, label_text, value in _METRIC_LINE.findall(text):
        labels = dict(_LABEL.findall(label_text))
        if labels.get("model") != model:
            continue
        kind = "success" if metric.endswith("success") else "failure"
        per_version = counts.setdefault(int(labels["version"]), {"success": 0.0, "failure": 0.0})
        per_version[kind] += float(value)
    return counts


def settled_counts(
    metrics_url: str, model: str, *, quiet_s: float = 0.3, timeout_s: float = 10.0
) -> dict[int, dict[str, float]]:
    """``version_counts`` once two reads ``quiet_s`` apart agree.

    Triton counts a request after it has sent the answer: read at once, a count can miss the last
    requests of one phase and credit them to the next.
    """
    deadline = time.monotonic() + timeout_s
    counts = version_counts(metrics_url, model)
    while True:
        time.sleep(quiet_s)
        again = version_counts(metrics_url, model)
        if again == counts or time.monotonic() > deadline:
            return again
        counts = again


@dataclass(frozen=True)
class CanaryRun:
    """A split exercised on real requests: what the client did and what Triton counted per version."""

    release: CanaryRelease
    requests: int
    stats: SplitStats
    triton_success: dict[int, float]  # per version, counted by Triton during the run
    triton_failure: dict[int, float]


def exercise(
    url: str,
    metrics_url: str,
    release: CanaryRelease,
    requests: list[dict[str, Array]],
    *,
    tolerance: float,
) -> CanaryRun:
    """Send ``requests`` through the split and read Triton's per-version counts before and after."""
    before = settled_counts(metrics_url, release.model)
    with TrafficSplit(url, release, tolerance=tolerance) as split:
        for inputs in requests:
            split.infer(inputs)
    after = settled_counts(metrics_url, release.model)
    zero = {"success": 0.0, "failure": 0.0}

    def delta(kind: str) -> dict[int, float]:
        return {v: after[v][kind] - before.get(v, zero)[kind] for v in sorted(after)}

    return CanaryRun(release, len(requests), split.stats, delta("success"), delta("failure"))
