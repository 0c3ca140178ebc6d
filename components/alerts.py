"""Alert rules, tiered by a ``severity`` label, and the Alertmanager routing that goes with them.

P0: the service is down for users (no ready replica; every request failing). Page now.
P1: users feel it or soon will (queue time over the service's target; GPU memory nearly full; XID faults).
P2: money or headroom is being wasted (GPUs idle for hours; spot groups failing to scale up, so
on-demand carries the load).

Every alert carries a ``service`` label where one applies, and a P0 inhibits that service's P1/P2:
when nothing is ready, a page about queue time is noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferstack.components import promql
from inferstack.components.alert_routing import SEVERITIES, AlertRouting, receivers, routes

_SERVICE_FROM_POD = f'"service", "$1", "pod", "(.+){promql.DEPLOYMENT_POD_SUFFIX}"'


def _with_service(expr: str) -> str:
    """Add a ``service`` label derived from a Deployment pod's name, so inhibition can match it."""
    return f"label_replace({expr}, {_SERVICE_FROM_POD})"


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, **labels: str) -> dict[str, Any]:
    assert severity in SEVERITIES
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary},
    }


def platform_rule_groups(
    *, gpu_memory_ratio: float = 0.95, underused_percent: float = 10.0, spot_backoff_share: float = 0.25
) -> list[dict[str, Any]]:
    """Cluster-wide GPU and capacity alerts."""
    return [
        {
            "name": "inferstack-gpu",
            "rules": [
                _alert(
                    "GPUMemoryNearlyFull",
                    _with_service(f"{promql.GPU_MEMORY_USED_RATIO} > {gpu_memory_ratio}"),
                    "10m",
                    "P1",
                    "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is over "
                    f"{gpu_memory_ratio:.0%} full: the next larger batch or model version may not fit",
                ),
                _alert(
                    "GPUXidErrors",
                    promql.gpu_new_xid_errors(),
                    "0m",
                    "P1",
                    "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}: "
                    "drain the node if it repeats",
                ),
                _alert(
                    "GPUUnderused",
                    _with_service(f"{promql.gpu_underused(window='1h')} < {underused_percent}"),
                    "2h",
                    "P2",
                    f"GPUs of {{{{ $labels.pod }}}} averaged under {underused_percent:.0f}% for hours: "
                    "lower min replicas or share GPUs",
                ),
                # Not "no spot nodes while on-demand ones run": that is the idle shape of a stack whose
                # on-demand baseline carries the minimum, and would fire for good.
                _alert(
                    "SpotGPUCapacityGone",
                    f"{promql.spot_node_groups_backed_off(window='1h')} > {spot_backoff_share:g}",
                    "15m",
                    "P2",
                    "Spot GPU group {{ $labels.node_group }} failed to scale up for much of the last hour: "
                    "spot pools may be exhausted and on-demand carries the load",
                ),
            ],
        }
    ]


def service_rule_group(
    *, service: str, namespace: str, models: Sequence[str], queue_time_target_ms: float
) -> dict[str, Any]:
    """The P0/P1 alerts of one Triton model service."""
    labels = {"service": service, "namespace": namespace}
    ready = promql.triton_ready_replicas(service=service, namespace=namespace)
    rules = [
        _alert(
            "TritonNoReadyReplica",
            f"({ready} or vector(0)) == 0",
            "2m",
            "P0",
            f"{namespace}/{service} has no ready Triton replica",
            **labels,
        )
    ]
    for model in models:
        rules += [
            _alert(
                "TritonAllRequestsFailing",
                f"{promql.triton_failure_ratio(model=model, namespace=namespace, window='5m')} > 0.99",
                "5m",
                "P0",
                f"Every request to {model} in {namespace}/{service} is failing",
                model=model,
                **labels,
            ),
            _alert(
                "TritonQueueTimeHigh",
                f"{promql.triton_queue_time_per_request_ms(model=model, namespace=namespace, window='5m')}"
                f" > {queue_time_target_ms:g}",
                "10m",
                "P1",
                f"Requests to {model} wait over {queue_time_target_ms:g} ms in Triton's queue: "
                "autoscaling is not keeping up",
                model=model,
                **labels,
            ),
        ]
    return {"name": f"inferstack-service-{namespace}-{service}", "rules": rules}


def prometheus_rule(name: str, namespace: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A PrometheusRule object (monitoring.coreos.com/v1) carrying ``groups``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "inferstack"},
        },
        "spec": {"groups": groups},
    }


def alertmanager_config(routing: AlertRouting | None = None) -> dict[str, Any]:
    """Group by service; a P0 silences the same service's P1/P2; each tier goes to the receivers
    ``routing`` names (components.alert_routing), nowhere without it.

    A service is its namespace and name: ``ranker`` in ``staging`` down must not silence ``ranker``
    in ``prod``. Both sides of every inhibition must name a service: Alertmanager's ``equal`` takes
    two absent labels as equal, so without that an XID fault (P1, no service) would silence the spot
    capacity alert (P2, no service), and any chart's alert that reused a tier would silence ours.
    """
    service = 'service =~ ".+"'

    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "group_by": ["namespace", "service"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "receiver": "null",
            "routes": routes(routing or AlertRouting()),
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity = "P0"', service],
                "target_matchers": ['severity =~ "P1|P2"', service],
                "equal": ["namespace", "service"],
            },
            {
                "source_matchers": ['severity = "P1"', service],
                "target_matchers": ['severity = "P2"', service],
                "equal": ["namespace", "service"],
            },
        ],
        "receivers": receivers(routing or AlertRouting()),
        "templates": ["/etc/alertmanager/config/*.tmpl"],
    }
