"""Every PromQL expression inferstack ships: dashboards, alert rules and KEDA triggers all call these.

One place means one spelling: a query that autoscaling depends on is the same string the
dashboards show and the real-metrics test evaluates against a real Triton.

Triton's latency metrics are cumulative counters of microseconds (no histogram buckets), so a time
per request is a ratio of rates: rate(total time) / rate(requests). Denominators are clamped so an
idle model reads 0, not NaN: KEDA and alert rules need a number.

Triton queries sum over the namespace's pods *by model*: one series per query (what KEDA requires),
and it keeps the ``model`` label, so dashboard legends and alerts can name the model.

Label conventions. Triton labels its series ``model`` and ``version`` (``reason`` on failures);
Prometheus adds ``namespace``, ``pod`` and ``service`` from the ServiceMonitor's target. DCGM
exporter labels GPU series with ``Hostname`` (the node) and ``gpu``, and with the
``namespace``/``pod``/``container`` of the pod using the GPU (none when no pod holds it); the GPU
component's ServiceMonitor keeps those labels instead of the exporter pod's own.
"""

from __future__ import annotations

import re

from inferstack.infra.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_GRAFANA_VARIABLE = re.compile(r"^\$[a-z_]+$")
_WINDOW = re.compile(r"^[1-9][0-9]*[smh]$")
_EPSILON = "1e-9"
_BY_MODEL = "sum by (model)"
# What a Deployment appends to its name to name a pod: the pod-template hash and a random suffix.
DEPLOYMENT_POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"


def _value(field: str, value: str) -> str:
    """A label value that is safe to put between quotes: a name, or a Grafana ``$variable``."""
    if not (_NAME.match(value) or _GRAFANA_VARIABLE.match(value)):
        raise InvalidInput(field, value, "letters, digits, '_', '.', '-' (or a Grafana $variable)")
    return value


def _regex(field: str, value: str) -> str:
    if not value or any(c in value for c in '"\\{}') or len(value) > 200:
        raise InvalidInput(field, value, "a label regex without quotes, backslashes or braces")
    return value


def _window(window: str) -> str:
    if not _WINDOW.match(window):
        raise InvalidInput("window", window, "a duration such as 30s, 1m, 5m or 1h")
    return window


def _triton(metric: str, model: str, namespace: str) -> str:
    return f'{metric}{{namespace="{_value("namespace", namespace)}",model="{_value("model", model)}"}}'


def _rate(metric: str, model: str, namespace: str, window: str) -> str:
    return f"{_BY_MODEL} (rate({_triton(metric, model, namespace)}[{_window(window)}]))"


def _per_request_ms(metric: str, model: str, namespace: str, window: str) -> str:
    requests = _rate("nv_inference_request_success", model, namespace, window)
    return f"({_rate(metric, model, namespace, window)} / clamp_min({requests}, {_EPSILON})) / 1000"


# --- Triton -------------------------------------------------------------------------------------


def triton_queue_time_per_request_ms(*, model: str, namespace: str, window: str = "1m") -> str:
    """Mean time a successful request waited in Triton's queue, in ms: the autoscaling signal."""
    return _per_request_ms("nv_inference_queue_duration_us", model, namespace, window)


def triton_compute_time_per_request_ms(*, model: str, namespace: str, window: str = "1m") -> str:
    """Mean time a request spent in the model (inference proper), in ms."""
    return _per_request_ms("nv_inference_compute_infer_duration_us", model, namespace, window)


def triton_request_time_per_request_ms(*, model: str, namespace: str, window: str = "1m") -> str:
    """Mean end-to-end time inside Triton per request, in ms."""
    return _per_request_ms("nv_inference_request_duration_us", model, namespace, window)


def triton_request_rate(*, model: str, namespace: str, window: str = "1m") -> str:
    """Successful requests per second."""
    return _rate("nv_inference_request_success", model, namespace, window)


def triton_failure_rate_by_reason(*, model: str, namespace: str, window: str = "1m") -> str:
    """Failed requests per second, by Triton's failure reason (REJECTED, CANCELED, BACKEND, OTHER)."""
    selector = _triton("nv_inference_request_failure", model, namespace)
    return f"sum by (model, reason) (rate({selector}[{_window(window)}]))"


def triton_failure_ratio(*, model: str, namespace: str, window: str = "5m") -> str:
    """Share of requests that failed, 0..1."""
    failures = _rate("nv_inference_request_failure", model, namespace, window)
    successes = _rate("nv_inference_request_success", model, namespace, window)
    return f"{failures} / clamp_min({failures} + {successes}, {_EPSILON})"


def triton_average_batch_size(*, model: str, namespace: str, window: str = "1m") -> str:
    """Inferences per model execution: how well dynamic batching is merging requests."""
    inferences = _rate("nv_inference_count", model, namespace, window)
    executions = _rate("nv_inference_exec_count", model, namespace, window)
    return f"{inferences} / clamp_min({executions}, {_EPSILON})"


def triton_pending_requests(*, model: str, namespace: str) -> str:
    """Requests Triton has accepted and not yet started: KEDA divides it by the replica count."""
    return f"{_BY_MODEL} ({_triton('nv_inference_pending_request_count', model, namespace)})"


def triton_replicas(*, model: str, namespace: str) -> str:
    """Triton pods serving ``model`` that Prometheus scrapes.

    Counted per pod, not per series: a pod serving two versions of the model has two series.
    """
    selector = _triton("nv_inference_request_success", model, namespace)
    return f"count by (model) (count by (model, pod) ({selector}))"


def triton_ready_replicas(*, service: str, namespace: str) -> str:
    """Replicas of a service's Deployment that pass their readiness probe (kube-state-metrics)."""
    selector = f'namespace="{_value("namespace", namespace)}",deployment="{_value("service", service)}"'
    return f"sum(kube_deployment_status_replicas_available{{{selector}}})"


def triton_queries(*, model: str, namespace: str, window: str = "1m") -> dict[str, str]:
    """Every query over Triton's own metrics, by name: what the real-metrics test evaluates."""
    return {
        "queue_time_per_request_ms": triton_queue_time_per_request_ms(
            model=model, namespace=namespace, window=window
        ),
        "compute_time_per_request_ms": triton_compute_time_per_request_ms(
            model=model, namespace=namespace, window=window
        ),
        "request_time_per_request_ms": triton_request_time_per_request_ms(
            model=model, namespace=namespace, window=window
        ),
        "request_rate": triton_request_rate(model=model, namespace=namespace, window=window),
        "failure_rate_by_reason": triton_failure_rate_by_reason(
            model=model, namespace=namespace, window=window
        ),
        "failure_ratio": triton_failure_ratio(model=model, namespace=namespace, window=window),
        "average_batch_size": triton_average_batch_size(model=model, namespace=namespace, window=window),
        "pending_requests": triton_pending_requests(model=model, namespace=namespace),
        "replicas": triton_replicas(model=model, namespace=namespace),
    }


# --- canary: one version of a model against another -----------------------------------------------
# Triton labels every series with the model's ``version``: a stable and a canary version loaded by the
# same pods are told apart by it alone. Each side sums over the pods by model, so they match one to one.


def _version(metric: str, model: str, version: int, namespace: str, extra: str = "") -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput("version", version, "a model version number >= 1")
    selector = _triton(metric, model, namespace)[:-1]
    return f'{selector},version="{version}"{extra}}}'


def triton_version_failure_ratio(*, model: str, version: int, namespace: str, window: str = "10m") -> str:
    """Share of one version's requests that failed, 0..1 (0 when it had none)."""
    failures, successes = (
        f"{_BY_MODEL} (rate({_version(metric, model, version, namespace)}[{_window(window)}]))"
        for metric in ("nv_inference_request_failure", "nv_inference_request_success")
    )
    return f"({failures} / clamp_min({failures} + {successes}, {_EPSILON}))"


def triton_version_p99_ms(*, model: str, version: int, namespace: str) -> str:
    """One version's p99 request time in ms, from Triton's latency summaries (``--metrics-config
    summary_latencies=true``), over Triton's own summary window.

    Quantiles of separate pods cannot be merged: the slowest pod's p99 stands for the version, so a
    canary is never judged better than its worst replica.
    """
    selector = _version("nv_inference_request_summary_us", model, version, namespace, ',quantile="0.99"')
    return f"(max by (model) ({selector}) / 1000)"


def triton_canary_failure_ratio_excess(
    *, model: str, stable_version: int, canary_version: int, namespace: str, window: str = "10m"
) -> str:
    """How far the canary's failure ratio is above the stable version's (negative: below)."""
    canary = triton_version_failure_ratio(
        model=model, version=canary_version, namespace=namespace, window=window
    )
    stable = triton_version_failure_ratio(
        model=model, version=stable_version, namespace=namespace, window=window
    )
    return f"{canary} - {stable}"


def triton_canary_p99_excess_ms(
    *, model: str, stable_version: int, canary_version: int, namespace: str
) -> str:
    """How many ms the canary's p99 is above the stable version's (negative: faster)."""
    canary = triton_version_p99_ms(model=model, version=canary_version, namespace=namespace)
    stable = triton_version_p99_ms(model=model, version=stable_version, namespace=namespace)
    return f"{canary} - {stable}"


def deployment_pod_regex(*, service: str) -> str:
    """The names of a Deployment's pods (``<name>-<template hash>-<suffix>``), and no other's.

    ``ranker-.*`` would also match the pods of a Deployment named ``ranker-v2``. A dot in the name is
    matched literally (``[.]``: the regex validation refuses backslashes).
    """
    return _value("service", service).replace(".", "[.]") + DEPLOYMENT_POD_SUFFIX


# --- the request front (nginx + njs in each model-service pod) ----------------------------------------


def front_time_per_request_ms(*, namespace: str, pod_regex: str, window: str = "1m") -> str:
    """Mean time an inference request spent in the pods' request fronts (reading and checking its body,
    Triton's answer time excluded), in ms: what grows when the fronts saturate and Triton's queue does not."""
    selector = f'namespace="{_value("namespace", namespace)}",pod=~"{_regex("pod_regex", pod_regex)}"'
    seconds = f"sum(rate(inferstack_front_seconds_total{{{selector}}}[{_window(window)}]))"
    requests = f"sum(rate(inferstack_front_requests_total{{{selector}}}[{_window(window)}]))"
    return f"({seconds} / clamp_min({requests}, {_EPSILON})) * 1000"


# --- GPUs (DCGM exporter) ----------------------------------------------------------------------------


def gpu_utilization(*, namespace: str, pod_regex: str, window: str = "1m") -> str:
    """Mean GPU utilisation (0-100) of the GPUs used by the pods matching ``pod_regex``."""
    selector = f'namespace="{_value("namespace", namespace)}",pod=~"{_regex("pod_regex", pod_regex)}"'
    return f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{selector}}}[{_window(window)}]))"


def _per_gpu(aggregation: str, series: str) -> str:
    """``series`` per GPU: DCGM labels each with its node's Hostname and its index there."""
    return f"{aggregation} by (Hostname, gpu) ({series})"


def _per_pod(aggregation: str, series: str) -> str:
    """``series`` per pod holding GPUs (DCGM leaves ``pod`` empty on a GPU no pod holds)."""
    return f'{aggregation} by (namespace, pod) ({series}{{pod!=""}})'


_MIB = " * 1024 * 1024"  # DCGM reports framebuffer in MiB
_FB_USED, _FB_FREE = "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"

GPU_UTILIZATION_BY_NODE = _per_gpu("avg", "DCGM_FI_DEV_GPU_UTIL")
GPU_UTILIZATION_BY_POD = _per_pod("avg", "DCGM_FI_DEV_GPU_UTIL")
GPU_MEMORY_USED_BYTES = _per_gpu("sum", _FB_USED) + _MIB
# A time-sliced GPU appears under each of its pods.
GPU_MEMORY_USED_BYTES_BY_POD = _per_pod("sum", _FB_USED) + _MIB
GPU_MEMORY_FREE_BYTES = _per_gpu("sum", _FB_FREE) + _MIB
GPU_MEMORY_USED_RATIO = (
    f"max by (Hostname, gpu, namespace, pod) ({_FB_USED} / clamp_min({_FB_USED} + {_FB_FREE}, 1))"
)
GPU_POWER_WATTS = _per_gpu("sum", "DCGM_FI_DEV_POWER_USAGE")
GPU_TEMPERATURE_CELSIUS = _per_gpu("max", "DCGM_FI_DEV_GPU_TEMP")
# The last XID error code per GPU; any non-zero value is a driver-reported fault.
GPU_XID_ERRORS = _per_gpu("max", "DCGM_FI_DEV_XID_ERRORS")


def gpu_new_xid_errors(*, window: str = "10m") -> str:
    """The XID code of GPUs that reported a new one within ``window``.

    The exporter's gauge keeps the last code until the driver reports another, so ``> 0`` alone would
    fire for as long as the node lives after a single fault; a change of value is a new fault.
    """
    changed = _per_gpu("max", f"changes(DCGM_FI_DEV_XID_ERRORS[{_window(window)}])")
    return f"{GPU_XID_ERRORS} > 0 and on (Hostname, gpu) {changed} > 0"


def gpu_underused(*, window: str = "1h") -> str:
    """Mean utilisation per pod's GPUs over ``window``."""
    return f'avg by (namespace, pod) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{{pod!=""}}[{_window(window)}]))'


# --- cluster-autoscaler (its per-node-group metrics, scraped by its ServiceMonitor) ---------------------

# The Auto Scaling groups of the spot GPU node groups: EKS names each group's ASG after the node group.
SPOT_NODE_GROUPS = ".*gpu-spot.*"


def spot_node_groups_backed_off(*, window: str = "1h") -> str:
    """Share of ``window`` each spot GPU group spent backed off after failed scale-ups (0..1).

    The autoscaler backs a group off when its scale-up fails (no spot capacity, a rejected request)
    and tries the next priority meanwhile: on-demand carries the load while spot cannot be had.
    """
    selector = f'cluster_autoscaler_node_group_backoff_status{{node_group=~"{SPOT_NODE_GROUPS}"}}'
    return f"max by (node_group) (avg_over_time({selector}[{_window(window)}]))"
