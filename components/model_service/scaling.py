"""How a TritonModelService is watched and sized: ServiceMonitor, KEDA ScaledObject, disruption budget."""

from __future__ import annotations

from typing import Any

from inferstack.components import promql
from inferstack.components.model_service.args import (
    FALLBACK_AFTER_FAILURES,
    TritonModelServiceArgs,
    namespace_of,
)
from inferstack.components.model_service.pod import labels, object_metadata
from inferstack.components.request_front import METRICS_PATH


def service_monitor(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    metadata = object_metadata(name, args)
    metadata["labels"] = {**metadata["labels"], **args.service_monitor_labels}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels(name)},
            "namespaceSelector": {"matchNames": [namespace_of(name, args)]},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": "15s"},
                {"port": "front-metrics", "path": METRICS_PATH, "interval": "15s"},
            ],
        },
    }


# Trigger name prefix -> KEDA metric type. KEDA >= 2.18 falls back for Value triggers too (it divides
# the fallback by the target's ready replicas), so each signal takes its plain form: a per-request
# time and a utilisation are already per replica (Value: the HPA multiplies by the ready pods), and
# pending requests are a total (AverageValue: the HPA divides by the replicas).
METRIC_TYPES = {
    "queue-time": "Value",
    "pending": "AverageValue",
    "gpu-utilization": "Value",
    "front-time": "Value",
}


def keda_queries(name: str, args: TritonModelServiceArgs) -> dict[str, str]:
    """Trigger name -> PromQL, all from the shared module: what the ScaledObject carries."""
    namespace = namespace_of(name, args)
    queries: dict[str, str] = {}
    for model in args.models:
        queries[f"queue-time-{model}"] = promql.triton_queue_time_per_request_ms(
            model=model, namespace=namespace
        )
        queries[f"pending-{model}"] = promql.triton_pending_requests(model=model, namespace=namespace)
    if args.gpu_utilization_target is not None:
        queries["gpu-utilization"] = promql.gpu_utilization(
            namespace=namespace, pod_regex=promql.deployment_pod_regex(service=name)
        )
    if args.front_time_target_ms is not None:
        queries["front-time"] = promql.front_time_per_request_ms(
            namespace=namespace, pod_regex=promql.deployment_pod_regex(service=name)
        )
    return queries


def _kind(trigger: str) -> str:
    return next(kind for kind in METRIC_TYPES if trigger.startswith(kind))


def scaled_object(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    thresholds = {
        "queue-time": args.queue_time_target_ms,
        "pending": args.pending_requests_per_replica,
        "gpu-utilization": args.gpu_utilization_target,
        "front-time": args.front_time_target_ms,
    }
    triggers = [
        {
            "type": "prometheus",
            "name": trigger,
            "metricType": METRIC_TYPES[_kind(trigger)],
            "metadata": {
                "serverAddress": args.prometheus_server_address,
                "query": query,
                "threshold": f"{thresholds[_kind(trigger)]:g}",
                # Every series exists while the service is scraped; an empty answer means the scrape
                # or the labels broke, and must count as a failure (towards the fallback), not as 0.
                "ignoreNullValues": "false",
            },
        }
        for trigger, query in keda_queries(name, args).items()
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": object_metadata(name, args),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": args.min_replicas,
            "maxReplicaCount": args.max_replicas,
            "pollingInterval": args.polling_interval_s,
            "cooldownPeriod": args.cooldown_s,
            "fallback": {
                "failureThreshold": FALLBACK_AFTER_FAILURES,
                "replicas": args.fallback_replicas or args.min_replicas,
            },
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Up fast: queueing grows by the second. Down slowly: a brief lull must not
                        # give back GPUs that take minutes to come back.
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 15},
                                {"type": "Pods", "value": 4, "periodSeconds": 15},
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "selectPolicy": "Min",
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    }
                }
            },
            "triggers": triggers,
        },
    }


def pod_disruption_budget(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """One pod at a time, however far KEDA scaled out: a fixed minAvailable sized for the minimum would
    let a drain take every replica above it at once. validate() keeps the minimum large enough that
    the pods left during one disruption still span more than one zone."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(name, args),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels(name)},
            # A pod that never became ready (bad rollout) must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
