"""Canary alerts and the traffic ConfigMap: checked and unit-tested by the real promtool, validated by schema.

Series are labelled as Triton labels them (``model``, ``version``, ``reason``, ``quantile``) plus the
``namespace``/``pod`` a ServiceMonitor adds; two pods serve both versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferstack.components import promql
from inferstack.components.alerts import prometheus_rule
from inferstack.components.canary import (
    TRAFFIC_KEY,
    CanaryRelease,
    canary_rule_group,
    check_canary,
    traffic_config_map,
)
from inferstack.infra.errors import InvalidInput
from tests.components.promtool import check_expressions, check_rules, unit_test_alert
from tests.schemas import validate_custom_resource, validate_k8s

RELEASE = CanaryRelease(
    "ranker",
    stable_version=1,
    canary_version=2,
    weight_percent=10,
    failure_ratio_margin=0.05,
    p99_margin_ms=20,
)
GROUP = canary_rule_group(service="ranker", namespace="serving", canary=RELEASE)
PODS = ("ranker-7d9f8b6c4-x2x9q", "ranker-7d9f8b6c4-k8m2p")
FIRING = {
    "severity": "P1",
    "service": "ranker",
    "namespace": "serving",
    "model": "ranker",
    "stable_version": "1",
    "canary_version": "2",
}


def triton(metric: str, version: int, pod: str, **extra: str) -> str:
    labels = {
        "namespace": "serving",
        "model": "ranker",
        "version": str(version),
        "pod": pod,
        "service": "ranker",
    }
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in {**labels, **extra}.items()) + "}"


def requests(version: int, *, ok_per_min: int, failed_per_min: int) -> list[dict[str, str]]:
    """Counters on both pods; Triton keeps a failure series per reason."""
    series = []
    for pod in PODS:
        series += [
            {"series": triton("nv_inference_request_success", version, pod), "values": f"0+{ok_per_min}x40"},
            {
                "series": triton("nv_inference_request_failure", version, pod, reason="BACKEND"),
                "values": f"0+{failed_per_min}x40",
            },
            {
                "series": triton("nv_inference_request_failure", version, pod, reason="REJECTED"),
                "values": "0x40",
            },
        ]
    return series


def p99(version: int, *, microseconds: tuple[int, int]) -> list[dict[str, str]]:
    """Triton's latency summary per pod: quantiles besides 0.99 must not be read."""
    series = []
    for pod, value in zip(PODS, microseconds, strict=True):
        summary = "nv_inference_request_summary_us"
        series += [
            {"series": triton(summary, version, pod, quantile="0.99"), "values": f"{value}x40"},
            {"series": triton(summary, version, pod, quantile="0.5"), "values": "900000x40"},
        ]
    return series


def failing(stable: tuple[int, int], canary: tuple[int, int]) -> list[dict[str, str]]:
    """Requests per minute of each version on each pod, as (succeeded, failed)."""
    return requests(1, ok_per_min=stable[0], failed_per_min=stable[1]) + requests(
        2, ok_per_min=canary[0], failed_per_min=canary[1]
    )


def slow(stable_ms: tuple[int, int], canary_ms: tuple[int, int]) -> list[dict[str, str]]:
    """Each version's p99 on its two pods."""
    return p99(1, microseconds=(stable_ms[0] * 1000, stable_ms[1] * 1000)) + p99(
        2, microseconds=(canary_ms[0] * 1000, canary_ms[1] * 1000)
    )


Case = tuple[str, str, list[dict[str, str]], dict[str, str] | None]


def cases(alert: str, *rows: tuple[str, list[dict[str, str]], bool]) -> list[Case]:
    """One alert's rows: (case, input series, whether it fires with the FIRING labels)."""
    return [(alert, case, series, FIRING if fires else None) for case, series, fires in rows]


FIRES, QUIET = True, False
CASES: list[Case] = [
    *cases(
        "TritonCanaryFailureRatioHigh",
        ("canary fails 20%, stable 1%", failing((99, 1), (8, 2)), FIRES),
        ("canary fails 4%, stable 1%: within the 5-point margin", failing((99, 1), (24, 1)), QUIET),
        ("both fail 30%: the canary is no worse", failing((70, 30), (7, 3)), QUIET),
        ("canary idle", failing((99, 1), (0, 0)), QUIET),
    ),
    *cases(
        "TritonCanaryLatencyHigh",
        ("one canary pod 35 ms slower", slow((40, 42), (45, 77)), FIRES),
        ("canary 10 ms slower: within the margin", slow((40, 42), (50, 52)), QUIET),
        ("canary faster", slow((40, 42), (20, 22)), QUIET),
    ),
]


def test_canary_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = check_rules([GROUP], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rules found" in result.stdout


@pytest.mark.parametrize(
    ("alert", "case", "series", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_canary_alert_fires_exactly_when_it_should(
    tmp_path: Path, alert: str, case: str, series: list[dict[str, str]], expected: dict[str, str] | None
) -> None:
    result = unit_test_alert([GROUP], tmp_path, alert=alert, series=series, at="30m", expected=expected)
    assert result.returncode == 0, f"{alert} / {case}:\n{result.stdout}{result.stderr}"


def test_promtool_does_catch_a_wrong_canary_expectation(tmp_path: Path) -> None:
    alert, case, series, _ = CASES[0]
    with pytest.raises(AssertionError):
        test_canary_alert_fires_exactly_when_it_should(tmp_path, alert, case, series, None)


def test_canary_queries_parse_and_select_one_version(tmp_path: Path) -> None:
    queries = {
        "failure": promql.triton_version_failure_ratio(model="ranker", version=2, namespace="serving"),
        "p99": promql.triton_version_p99_ms(model="ranker", version=2, namespace="serving"),
    }
    result = check_expressions(queries, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all('version="2"' in q for q in queries.values())
    assert 'quantile="0.99"' in queries["p99"]
    with pytest.raises(InvalidInput) as error:
        promql.triton_version_p99_ms(model="ranker", version=0, namespace="serving")
    assert error.value.field == "version"


def test_rule_object_and_traffic_config_map_validate(vendor_dir: Path) -> None:
    validate_custom_resource(prometheus_rule("ranker-canary", "serving", [GROUP]), vendor_dir)
    config_map = traffic_config_map(service="ranker", namespace="serving", canary=RELEASE)
    validate_k8s(config_map)
    assert json.loads(config_map["data"][TRAFFIC_KEY]) == {
        "model": "ranker",
        "stable_version": 1,
        "canary_version": 2,
        "weight_percent": 10,
        "mirror_percent": 0.0,
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": "other"}, "canary.model"),
        ({"stable_version": 0}, "canary.stable_version"),
        ({"canary_version": 1}, "canary.canary_version"),
        ({"weight_percent": 101}, "canary.weight_percent"),
        ({"mirror_percent": -1}, "canary.mirror_percent"),
        ({"failure_ratio_margin": 1.5}, "canary.failure_ratio_margin"),
        ({"p99_margin_ms": float("inf")}, "canary.p99_margin_ms"),
        ({"window": "30s"}, "canary.window"),
    ],
)
def test_bad_canary_settings_name_the_field(overrides: dict[str, Any], field: str) -> None:
    import dataclasses

    with pytest.raises(InvalidInput) as error:
        check_canary(dataclasses.replace(RELEASE, **overrides), ["ranker"])
    assert error.value.field == field
