"""The three charts' values (pure): what the releases are given."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi

from inferstack.components.charts import (
    COLLECTOR_IMAGE,
    FLUENT_BIT_IMAGE,
    JAEGER_IMAGE,
)
from inferstack.components.manifests import PART_OF, restricted_security_context
from inferstack.components.telemetry.configs import collector_config, fluent_bit_config, jaeger_config
from inferstack.components.telemetry.names import (
    BADGER_CLAIM,
    BADGER_DIR,
    COLLECTOR_SERVICE,
    CONFIG_DIGEST_LABEL,
    FLUENT_BIT_HTTP_PORT,
    FLUENT_BIT_STATE_DIR,
    IMAGE_UID,
    IRSA_ANNOTATION,
    JAEGER_SERVICE,
    jaeger_otlp_endpoint,
)

# --- chart values (pure) --------------------------------------------------------------------------


def labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": "telemetry", **PART_OF}


def collector_values(ns: str, node_selector: dict[str, str]) -> dict[str, Any]:
    """Two stateless replicas on different nodes (a node drain does not stop the spans), OTLP only."""
    return {
        "mode": "deployment",
        "image": {
            "repository": f"{COLLECTOR_IMAGE.registry}/{COLLECTOR_IMAGE.repository}",
            "tag": COLLECTOR_IMAGE.tag,
        },
        "command": {"name": "otelcol-k8s"},  # the binary of the Kubernetes distribution
        # The whole configuration, unmerged with the chart's default one (Jaeger, Zipkin and Prometheus
        # receivers, debug exporters, logs and metrics pipelines). Helm deletes a default key set to
        # null, but the Python SDK drops null map values before they reach the engine
        # (pulumi/pulumi#12178), so `config` could not remove them; `alternateConfig` replaces it.
        "alternateConfig": collector_config(jaeger_otlp_endpoint(ns)),
        # The container ports (and the Service's) of the receivers that are not configured.
        "ports": {
            name: {"enabled": False} for name in ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")
        },
        "replicaCount": 2,
        "nodeSelector": node_selector,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": COLLECTOR_SERVICE}},
            }
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": restricted_security_context(IMAGE_UID),
        "serviceAccount": {"automountServiceAccountToken": False},  # it never calls the API server
    }


def badger_claim(*, storage_class: str, storage_gib: int) -> dict[str, Any]:
    """Jaeger's Badger volume, rendered by the release (the chart mounts volumes, it claims none)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": BADGER_CLAIM, "labels": labels(JAEGER_SERVICE)},
        "spec": {
            "storageClassName": storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
        },
    }


def jaeger_values(
    *, trace_retention_hours: int, storage_class: str, storage_gib: int, node_selector: dict[str, str]
) -> dict[str, Any]:
    """One replica (Badger is a single-process store on one volume), replaced by Recreate: the chart's
    default strategy, which frees the ReadWriteOnce volume before the next pod mounts it."""
    config = jaeger_config(trace_retention_hours=trace_retention_hours)
    # The chart stamps no checksum of its ConfigMap on the pod: without this label, a changed retention
    # would update the ConfigMap and leave the running pod on the old one until something restarts it.
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]
    return {
        "userconfig": config,
        "jaeger": {
            "podLabels": {CONFIG_DIGEST_LABEL: digest},
            "image": {
                "registry": JAEGER_IMAGE.registry,
                "repository": JAEGER_IMAGE.repository,
                "tag": JAEGER_IMAGE.tag,
            },
            "replicas": 1,
            "nodeSelector": node_selector,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            # The volume is written as the image's user (the chart's pod context: fsGroup 10001).
            "securityContext": restricted_security_context(IMAGE_UID),
            "serviceAccount": {"automountServiceAccountToken": False},
            "extraVolumes": [{"name": "data", "persistentVolumeClaim": {"claimName": BADGER_CLAIM}}],
            "extraVolumeMounts": [{"name": "data", "mountPath": BADGER_DIR}],
        },
        "extraObjects": [badger_claim(storage_class=storage_class, storage_gib=storage_gib)],
    }


def fluent_bit_values(*, region: str, log_group: str, role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """On every node, GPU nodes and their taint included: that is where Triton's logs are."""
    return {
        "image": {
            "repository": f"{FLUENT_BIT_IMAGE.registry}/{FLUENT_BIT_IMAGE.repository}",
            "tag": FLUENT_BIT_IMAGE.tag,
        },
        "testFramework": {"enabled": False},  # `helm test`'s pod pulls busybox:latest from Docker Hub
        # IRSA: EKS injects a web-identity token for the log-shipping role into the pods; no keys.
        "serviceAccount": {"annotations": {IRSA_ANNOTATION: role_arn}},
        "priorityClassName": "system-node-critical",
        "tolerations": [{"operator": "Exists"}],
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        # Container logs are root's files (0640): read as root, nothing more.
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "metricsPort": FLUENT_BIT_HTTP_PORT,
        "config": fluent_bit_config(region=region, log_group=log_group),
        # The node's logs read-only (the chart's default mounts them writable, with Docker's folder
        # and the machine id, which containerd nodes and this configuration do not use).
        "daemonSetVolumes": [
            {"name": "varlog", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "state", "hostPath": {"path": FLUENT_BIT_STATE_DIR, "type": "DirectoryOrCreate"}},
        ],
        "daemonSetVolumeMounts": [
            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
            {"name": "state", "mountPath": FLUENT_BIT_STATE_DIR},
        ],
    }
