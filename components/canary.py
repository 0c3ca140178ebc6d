"""A canary release between two versions of one model, served by the same Triton pods.

How the traffic is split (the design choice, for clusters without a service mesh): Triton loads both
versions (the repository's version policy, ``specific: [stable, canary]``), and the clients choose
the version per request (``serving/client/traffic_split.py``): exactly ``weight_percent`` of requests go to
the canary, and ``mirror_percent`` of the stable ones are also sent to the canary, whose answers are
compared with the stable ones and never returned. Two Deployments behind one Service would split by
replica count (one canary pod in ten is 10 %, never 1 %) and would double the GPUs held; per-request
routing is exact at any weight and costs one model's memory.

The split is published as the ``<service>-traffic`` ConfigMap that clients read, and the canary is
judged by Triton's own per-version metrics: a P1 alert fires when the canary's failure ratio or p99
exceeds the stable version's by a set margin. The served versions are in the pods' template, so a new
canary or stable version rolls the pods and the split follows the rollout (docs/operations/canaries.md,
"Promotion reaches every pod"). Promotion and rollback are config changes:

- promote: ``stable_version = canary_version`` (and the version policy to that version alone);
- roll back: ``weight_percent = 0`` (or no canary at all), then drop the version from the policy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from inferstack.components import promql
from inferstack.infra.errors import InvalidInput

_WINDOW = re.compile(r"^[1-9][0-9]*[mh]$")
TRAFFIC_KEY = "split.json"  # the ConfigMap key clients read


@dataclass(frozen=True)
class CanaryRelease:
    """Two versions of one model served side by side: the share the canary answers and the share of
    stable requests mirrored to it, with the alert margins it is judged by."""

    model: str
    stable_version: int
    canary_version: int
    weight_percent: float = 5.0  # share of all requests answered by the canary
    mirror_percent: float = 0.0  # share of stable requests also sent to the canary: compared, not returned
    failure_ratio_margin: float = 0.01  # canary failure ratio - stable's above this fires
    p99_margin_ms: float = 25.0  # canary p99 - stable p99 above this fires
    window: str = "10m"
    alert_after: str = "10m"  # how long the excess must last


def check_canary(canary: CanaryRelease, models: Sequence[str]) -> None:
    """Every field, named as ``canary.<field>``, before any resource is registered."""
    if canary.model not in models:
        raise InvalidInput("canary.model", canary.model, f"one of the service's models: {list(models)}")
    for name in ("stable_version", "canary_version"):
        value = getattr(canary, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"canary.{name}", value, "a model version number >= 1")
    if canary.stable_version == canary.canary_version:
        raise InvalidInput(
            "canary.canary_version", canary.canary_version, "a version other than stable_version"
        )
    for name, upper in (("weight_percent", 100.0), ("mirror_percent", 100.0)):
        value = getattr(canary, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
            raise InvalidInput(f"canary.{name}", value, f"a percentage from 0 to {upper:g}")
    for name in ("failure_ratio_margin", "p99_margin_ms"):
        value = getattr(canary, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise InvalidInput(f"canary.{name}", value, "a finite number >= 0")
    if canary.failure_ratio_margin >= 1:
        raise InvalidInput("canary.failure_ratio_margin", canary.failure_ratio_margin, "a ratio below 1")
    for name in ("window", "alert_after"):
        if not _WINDOW.match(getattr(canary, name)):
            raise InvalidInput(f"canary.{name}", getattr(canary, name), "minutes or hours, such as 10m or 1h")


def canary_rule_group(*, service: str, namespace: str, canary: CanaryRelease) -> dict[str, Any]:
    """The P1 alerts that say a canary is worse than the stable version it is meant to replace."""
    versions = {"stable_version": str(canary.stable_version), "canary_version": str(canary.canary_version)}
    labels = {"severity": "P1", "service": service, "namespace": namespace, "model": canary.model, **versions}
    model, stable, version = canary.model, canary.stable_version, canary.canary_version
    where = f"{namespace}/{service}: {model} version {version}"
    failures = promql.triton_canary_failure_ratio_excess(
        model=model, stable_version=stable, canary_version=version, namespace=namespace, window=canary.window
    )
    p99 = promql.triton_canary_p99_excess_ms(
        model=model, stable_version=stable, canary_version=version, namespace=namespace
    )
    alerts = [
        (
            "TritonCanaryFailureRatioHigh",
            f"{failures} > {canary.failure_ratio_margin:g}",
            f"{where} fails more than version {stable} "
            f"(by over {canary.failure_ratio_margin:.1%} of requests)",
        ),
        (
            "TritonCanaryLatencyHigh",
            f"{p99} > {canary.p99_margin_ms:g}",
            f"{where} has a p99 over {canary.p99_margin_ms:g} ms above version {stable}'s",
        ),
    ]
    return {
        "name": f"inferstack-canary-{namespace}-{service}",
        "rules": [
            {
                "alert": alert,
                "expr": expr,
                "for": canary.alert_after,
                "labels": labels,
                "annotations": {"summary": f"{summary}: roll back (weight_percent 0)"},
            }
            for alert, expr, summary in alerts
        ],
    }


def traffic_document(canary: CanaryRelease) -> dict[str, Any]:
    """What a client needs to split and mirror: the ConfigMap's ``split.json``."""
    keys = ("model", "stable_version", "canary_version", "weight_percent", "mirror_percent")
    return {key: value for key, value in asdict(canary).items() if key in keys}


def traffic_config_map(*, service: str, namespace: str, canary: CanaryRelease) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{service}-traffic",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "inferstack"},
        },
        "data": {TRAFFIC_KEY: json.dumps(traffic_document(canary), sort_keys=True)},
    }
