"""Observability: kube-prometheus-stack (Prometheus, Alertmanager, Grafana, kube-state-metrics),
inferstack's GPU and Triton dashboards, and the platform's tiered alert rules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from inferstack.components.alert_routing import AlertRouting, check_routing, sns_publish_policy
from inferstack.components.alerts import alertmanager_config, platform_rule_groups, prometheus_rule
from inferstack.components.charts import (
    GRAFANA_IMAGE_TAG,
    KUBE_PROMETHEUS_STACK,
    PROMETHEUS_OPERATOR_IMAGE_TAG,
    release,
)
from inferstack.components.dashboards import dashboard_configmap, dashboards
from inferstack.components.manifests import custom_resource, namespace
from inferstack.components.storage import GP3
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import Oidc, irsa_role
from inferstack.infra.node_plans import NODE_ROLE_LABEL

_RETENTION = re.compile(r"^[1-9][0-9]*[hdwy]$")
# kube-prometheus-stack's Prometheus service, as KEDA triggers reach it from any namespace.
PROMETHEUS_SERVICE = "kube-prometheus-stack-prometheus"
ALERTMANAGER_SERVICE_ACCOUNT = "inferstack-alertmanager"
# EKS runs the control plane out of the cluster's sight: nothing scrapes the scheduler, the controller
# manager or etcd, so the chart's `absent(up{job=...})` alerts for them would fire forever (critical).
NOT_ON_EKS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd")


def prometheus_url(namespace: str) -> str:
    return f"http://{PROMETHEUS_SERVICE}.{namespace}.svc:9090"


def kube_prometheus_stack_values(
    args: MonitoringArgs,
    *,
    grafana_admin_password: pulumi.Input[str],
    alertmanager: pulumi.Input[dict[str, Any]] | None = None,
    alertmanager_role_arn: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """The chart's values for ``args`` (retention, volume, placement, trace data source)."""
    operator_image = {"tag": PROMETHEUS_OPERATOR_IMAGE_TAG}
    account: dict[str, Any] = {"create": True, "name": ALERTMANAGER_SERVICE_ACCOUNT}
    if alertmanager_role_arn is not None:
        account["annotations"] = {"eks.amazonaws.com/role-arn": alertmanager_role_arn}
    return {
        **{component: {"enabled": False} for component in NOT_ON_EKS},
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
                "retention": args.retention,
                "nodeSelector": args.node_selector,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": args.storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{args.storage_gib}Gi"}},
                        }
                    }
                },
            }
        },
        "alertmanager": {
            "config": alertmanager if alertmanager is not None else alertmanager_config(),
            "serviceAccount": account,
        },
        "grafana": {
            # The chart's default is Docker Hub; Grafana publishes the same releases to GHCR.
            "image": {"registry": "ghcr.io", "repository": "grafana/grafana", "tag": GRAFANA_IMAGE_TAG},
            "testFramework": {"enabled": False},  # a `helm test` pod (Docker Hub's bats) nobody runs
            "adminPassword": grafana_admin_password,
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": "grafana_dashboard",
                    "labelValue": "1",
                    "searchNamespace": "ALL",
                }
            },
            "additionalDataSources": [] if args.jaeger_url is None else [jaeger_data_source(args.jaeger_url)],
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
    alerts: AlertRouting = field(default_factory=AlertRouting)
    # For SNS receivers: Alertmanager publishes with a role its service account assumes.
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer_url: pulumi.Input[str] | None = None


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
        check_routing(args.alerts, "alerts")
        super().__init__("inferstack:monitoring:Monitoring", name, None, opts)
        password = random.RandomPassword(
            f"{name}-grafana-admin", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        ns = namespace(f"{name}-ns", args.namespace, child_options(self, opts))
        after_namespace = child_options(self, opts, after=[ns])
        role_arn = self._sns_role(name, args) if args.alerts.sns_topic_arns else None
        # Routing keys and webhook URLs are credentials: the rendered config travels as a secret.
        routing = alertmanager_config(args.alerts)
        secret = any(r.holds_secret for r in args.alerts.receivers)
        stack = release(
            f"{name}-kube-prometheus-stack",
            KUBE_PROMETHEUS_STACK,
            namespace=args.namespace,
            values=kube_prometheus_stack_values(
                args,
                grafana_admin_password=password.result,
                alertmanager=pulumi.Output.secret(routing) if secret else routing,
                alertmanager_role_arn=role_arn,
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

    def _sns_role(self, name: str, args: MonitoringArgs) -> pulumi.Output[str]:
        if args.oidc_provider_arn is None or args.oidc_issuer_url is None:
            raise InvalidInput("oidc_provider_arn", None, "the cluster's OIDC provider, for SNS receivers")
        return irsa_role(
            f"{name}-alertmanager",
            Oidc(args.oidc_provider_arn, args.oidc_issuer_url),
            args.namespace,
            ALERTMANAGER_SERVICE_ACCOUNT,
            policies={f"{name}-alertmanager-sns": json.dumps(sns_publish_policy(args.alerts.sns_topic_arns))},
            opts=pulumi.ResourceOptions(parent=self),
        ).role.arn
