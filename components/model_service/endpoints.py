"""How a TritonModelService is reached: its Service and the headless Service gRPC clients balance over."""

from __future__ import annotations

from typing import Any

from inferstack.components.model_service.args import TritonModelServiceArgs
from inferstack.components.model_service.pod import (
    FRONT_METRICS_PORT,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    labels,
    object_metadata,
)


def _ports(*names: str) -> list[dict[str, Any]]:
    numbers = {
        "http": HTTP_PORT,
        "grpc": GRPC_PORT,
        "metrics": METRICS_PORT,
        "front-metrics": FRONT_METRICS_PORT,
    }
    return [{"name": n, "port": numbers[n], "targetPort": n, "protocol": "TCP"} for n in names]


def service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(name, args),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(name),
            "ports": _ports("http", "grpc", "metrics", "front-metrics"),
        },
    }


def headless_service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """One DNS record per ready pod: gRPC clients balance across them (HTTP/2 would pin one pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**object_metadata(name, args), "name": f"{name}-headless"},
        # No metrics port: the ServiceMonitor would otherwise scrape every pod a second time through
        # this Service, doubling every sum the autoscaler reads.
        "spec": {"clusterIP": "None", "selector": labels(name), "ports": _ports("http", "grpc")},
    }
