"""Observability: kube-prometheus-stack (Prometheus, Alertmanager, Grafana, kube-state-metrics),
inferstack's GPU and Triton dashboards, and the platform's tiered alert rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from inferstack.components.alerts import alertmanager_config, platform_rule_groups, prometheus_rule
from inferstack.components.charts import KUBE_PROMETHEUS_STACK, PROMETHEUS_OPERATOR_IMAGE_TAG, release
from inferstack.components.dashboards import dashboard_configmap, dashboards
from inferstack.components.manifests import custom_resource, namespace
from inferstack.components.storage import GP3
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.nodegroups import NODE_ROLE_LABEL

_RETENTION = re.compile(r"^[1-9][0-9]*[hdwy]$")
# kube-prometheus-stack's Prometheus service, as KEDA triggers reach it from any namespace.
PROMETHEUS_SERVICE = "kube-prometheus-stack-prometheus"


def prometheus_url(namespace: str) -> str:
    return f"http://{PROMETHEUS_SERVICE}.{namespace}.svc:9090"


def kube_prometheus_stack_values(
    *,
    retention: str,
    storage_gib: int,
    storage_class: str,
    grafana_admin_password: pulumi.Input[str],
    node_selector: dict[str, str],
    jaeger_url: str | None = None,
) -> dict[str, Any]:
    operator_image = {"tag": PROMETHEUS_OPERATOR_IMAGE_TAG}
    return {
        "prometheusOperator": {
            "image": operator_image,
            "prometheusConfigReloader": {"image": operator_image},
            "admissionWebhooks": {"deployment": {"image": operator_image}},
        },
        "prometheus": {
            "prometheusSpec": {
                # Select monitors and rules from every release, not only this chart's own.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "retention": retention,
                "nodeSelector": node_selector,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
                        }
                    }
                },
            }
        },
        "alertmanager": {"config": alertmanager_config()},
        "grafana": {
            "adminPassword": grafana_admin_password,
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": "grafana_dashboard",
                    "labelValue": "1",
                    "searchNamespace": "ALL",
                }
            },
            "additionalDataSources": [] if jaeger_url is None else [jaeger_data_source(jaeger_url)],
        },
    }


def jaeger_data_source(url: str) -> dict[str, Any]:
    """Grafana's data source for the trace store (components.telemetry), provisioned with Grafana."""
    return {
        "name": "Jaeger",
        "type": "jaeger",
        "uid": "jaeger",
        "access": "proxy",  # Grafana's server reaches the in-cluster Service, not the browser
        "url": url,
        "editable": False,
    }


@dataclass
class MonitoringArgs:
    """kube-prometheus-stack's namespace, retention, volume, placement and the trace data source."""

    namespace: str = "monitoring"
    retention: str = "15d"
    storage_gib: int = 100
    storage_class: str = GP3  # components.storage creates it
    node_selector: dict[str, str] = field(default_factory=lambda: {NODE_ROLE_LABEL: "system"})
    jaeger_url: str | None = None  # the trace store's query API (Telemetry.jaeger_url): a data source


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack with the GPU and Triton dashboards and the P0-P2 alert rules; installs
    the ServiceMonitor and PrometheusRule CRDs the model services use."""

    namespace: str
    prometheus_url: str
    grafana_admin_password: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if not _RETENTION.match(args.retention):
            raise InvalidInput("retention", args.retention, "a duration such as 15d, 12h or 2w")
        if args.storage_gib < 10:
            raise InvalidInput("storage_gib", args.storage_gib, "at least 10 GiB")
        super().__init__("inferstack:monitoring:Monitoring", name, None, opts)
        password = random.RandomPassword(
            f"{name}-grafana-admin", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        ns = namespace(f"{name}-ns", args.namespace, child_options(self, opts))
        after_namespace = child_options(self, opts, after=[ns])
        stack = release(
            f"{name}-kube-prometheus-stack",
            KUBE_PROMETHEUS_STACK,
            namespace=args.namespace,
            values=kube_prometheus_stack_values(
                retention=args.retention,
                storage_gib=args.storage_gib,
                storage_class=args.storage_class,
                grafana_admin_password=password.result,
                node_selector=args.node_selector,
                jaeger_url=args.jaeger_url,
            ),
            opts=after_namespace,
        )
        for key, dashboard in dashboards().items():
            manifest = dashboard_configmap(f"inferstack-dashboard-{key}", args.namespace, dashboard)
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{key}",
                metadata=manifest["metadata"],
                data=manifest["data"],
                opts=after_namespace,
            )
        rule = prometheus_rule("inferstack-platform", args.namespace, platform_rule_groups())
        # The PrometheusRule CRD arrives with the chart.
        custom_resource(
            f"{name}-platform-rules",
            rule,
            child_options(self, opts, after=[stack]),
        )
        self.namespace = args.namespace
        self.prometheus_url = prometheus_url(args.namespace)
        self.grafana_admin_password = pulumi.Output.secret(password.result)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "prometheus_url": self.prometheus_url,
                "grafana_admin_password": self.grafana_admin_password,
            }
        )
