"""The platform components under mocks: releases pinned and configured, rules and dashboards installed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from inferstack.components import charts
from inferstack.components.alerts import alertmanager_config
from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs, dcgm_exporter_values
from inferstack.components.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.platform.args import SERVICE_SETTINGS_AS_GIVEN
from inferstack.components.platform_config import ServiceConfig
from inferstack.components.telemetry import Telemetry, TelemetryArgs
from tests.harness import Recording, run_invalid, run_program
from tests.infra.iam import allowed
from tests.schemas import validate_custom_resource, validate_k8s

RELEASE = "kubernetes:helm.sh/v3:Release"
OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"


def platform() -> dict[str, Any]:
    on_cluster = pulumi.ResourceOptions(provider=k8s.Provider("k8s", kubeconfig="{}"))
    GpuOperators("gpu", GpuOperatorsArgs(time_slicing_replicas=2), on_cluster)
    monitoring = Monitoring("monitoring", MonitoringArgs(), on_cluster)
    Autoscaling(
        "autoscaling",
        AutoscalingArgs(
            cluster_name="prod",
            region="us-east-1",
            oidc_provider_arn=OIDC,
            oidc_issuer_url=ISSUER,
        ),
    )
    Telemetry(
        "telemetry",
        TelemetryArgs(
            cluster_name="prod", oidc_provider_arn=OIDC, oidc_issuer_url=ISSUER, region="us-east-1"
        ),
        on_cluster,
    )
    return {"password": monitoring.grafana_admin_password, "prometheus": monitoring.prometheus_url}


@pytest.fixture(scope="module")
def recording() -> Recording:
    recorded, _ = run_program(platform)
    return recorded


def releases(recording: Recording) -> dict[str, dict[str, Any]]:
    return {r.inputs["chart"]: r.inputs for r in recording.of_type(RELEASE)}


def test_every_chart_is_released_pinned(recording: Recording) -> None:
    found = releases(recording)
    assert set(found) == {c.name for c in charts.CHARTS}
    for chart in charts.CHARTS:
        release = found[chart.name]
        assert release["version"] == chart.version
        assert release["repositoryOpts"]["repo"] == chart.repository
        assert release["atomic"] is True
    assert "latest" not in json.dumps(found)


def test_releases_use_the_given_provider_and_their_components(recording: Recording) -> None:
    parents = {r.inputs["chart"]: r.parent_type for r in recording.of_type(RELEASE)}
    assert parents == {
        "nvidia-device-plugin": "inferstack:gpu:GpuOperators",
        "dcgm-exporter": "inferstack:gpu:GpuOperators",
        "kube-prometheus-stack": "inferstack:monitoring:Monitoring",
        "keda": "inferstack:autoscaling:Autoscaling",
        "cluster-autoscaler": "inferstack:autoscaling:Autoscaling",
        "opentelemetry-collector": "inferstack:telemetry:Telemetry",
        "jaeger": "inferstack:telemetry:Telemetry",
        "fluent-bit": "inferstack:telemetry:Telemetry",
    }


def test_gpu_daemons_run_only_on_gpu_nodes(recording: Recording) -> None:
    for chart in ("nvidia-device-plugin", "dcgm-exporter"):
        values = releases(recording)[chart]["values"]
        assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values[
            "tolerations"
        ]
    # Enabled, and keeping the GPU-holding pod's labels (components/gpu.py says why).
    assert (
        releases(recording)["dcgm-exporter"]["values"]["serviceMonitor"]
        == dcgm_exporter_values()["serviceMonitor"]
    )
    assert "replicas: 2" in releases(recording)["nvidia-device-plugin"]["values"]["config"]["map"]["default"]


def test_prometheus_selects_everything_and_grafana_gets_a_generated_password(recording: Recording) -> None:
    values = releases(recording)["kube-prometheus-stack"]["values"]
    spec = values["prometheus"]["prometheusSpec"]
    for key in (
        "serviceMonitorSelectorNilUsesHelmValues",
        "podMonitorSelectorNilUsesHelmValues",
        "ruleSelectorNilUsesHelmValues",
    ):
        assert spec[key] is False
    assert spec["retention"] == "15d"
    assert values["grafana"]["adminPassword"] == "mock-password"
    assert values["alertmanager"]["config"] == alertmanager_config()
    password = recording.one("random:index/randomPassword:RandomPassword").inputs
    assert password["length"] >= 32


def test_rules_and_dashboards_are_installed_and_valid(recording: Recording, vendor_dir: Path) -> None:
    rule = recording.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs
    validate_custom_resource(rule, vendor_dir)
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} >= {
        "GPUMemoryNearlyFull",
        "GPUXidErrors",
    }
    maps = recording.of_type("kubernetes:core/v1:ConfigMap")
    assert len(maps) == 2
    for config_map in maps:
        validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", **config_map.inputs})


def test_cluster_autoscaler_prefers_spot_and_can_touch_only_its_own_groups(recording: Recording) -> None:
    values = releases(recording)["cluster-autoscaler"]["values"]
    assert values["extraArgs"]["expander"] == "priority"
    assert values["extraArgs"]["balance-similar-node-groups"] is True
    priorities = {int(k): v for k, v in values["expanderPriorities"].items()}
    first, second = sorted(priorities, reverse=True)[:2]
    assert (priorities[first], priorities[second]) == ([".*gpu-reserved-.*"], [".*gpu-spot.*"])
    assert values["autoDiscovery"]["clusterName"] == "prod"
    role = recording.one("aws:iam/role:Role", "autoscaling-cluster-autoscaler")
    assert values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        "autoscaling-cluster-autoscaler"
    )
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:kube-system:cluster-autoscaler" in trust.values()
    policy = json.loads(
        recording.one("aws:iam/rolePolicy:RolePolicy", "autoscaling-cluster-autoscaler").inputs["policy"]
    )
    group = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x"
    owned = {"aws:ResourceTag/k8s.io/cluster-autoscaler/prod": "owned"}
    assert allowed(policy, "autoscaling:SetDesiredCapacity", group, owned)
    assert not allowed(
        policy,
        "autoscaling:SetDesiredCapacity",
        group,
        {"aws:ResourceTag/k8s.io/cluster-autoscaler/other": "owned"},
    )
    assert not allowed(policy, "autoscaling:DeleteAutoScalingGroup", group, owned)
    assert not allowed(policy, "ec2:TerminateInstances", "*", owned)


def test_bottlerocket_gpu_nodes_get_no_second_device_plugin() -> None:
    def program() -> None:
        GpuOperators("gpu", GpuOperatorsArgs(gpu_ami_types=["BOTTLEROCKET_x86_64_NVIDIA"]))

    recording, _ = run_program(program)
    # Bottlerocket's NVIDIA variant runs its own plugin: a second would advertise every GPU twice.
    assert [r.inputs["chart"] for r in recording.of_type(RELEASE)] == ["dcgm-exporter"]


def test_children_wait_for_what_their_component_waits_for() -> None:
    """The SDK does not pass a component's depends_on down; inferstack's components do."""

    def program() -> None:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        first = k8s.core.v1.ConfigMap("first", opts=pulumi.ResourceOptions(provider=provider))
        source = ModelSource(role_arn="arn:aws:iam::123456789012:role/r", repository_uri="s3://b/p")
        after = pulumi.ResourceOptions(depends_on=[first])
        GpuOperators("gpu", GpuOperatorsArgs(), after)
        TritonModelService(
            "ranker",
            TritonModelServiceArgs(models=["ranker"], source=source, zones=3, cluster_has_crds=True),
            after,
        )

    recording, _ = run_program(program)
    first = recording.named("first").urn
    children = [r for r in recording if r.custom and r.parent_name in ("gpu", "ranker")]
    assert {r.type for r in children} >= {
        RELEASE,
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
        "kubernetes:keda.sh/v1alpha1:ScaledObject",
    }
    assert [r.name for r in children if first not in r.dependencies] == []


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda p: GpuOperators(
                "g",
                GpuOperatorsArgs(gpu_ami_types=["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"]),
            ),
            "gpu_ami_types",
        ),
        (lambda p: GpuOperators("g", GpuOperatorsArgs(gpu_ami_types=[])), "gpu_ami_types"),
        (
            lambda p: GpuOperators(
                "g",
                GpuOperatorsArgs(time_slicing_replicas=4, gpu_ami_types=["BOTTLEROCKET_x86_64_NVIDIA"]),
            ),
            "time_slicing_replicas",
        ),
        (
            lambda p: GpuOperators("g", GpuOperatorsArgs(time_slicing_replicas=1)),
            "time_slicing_replicas",
        ),
        (lambda p: Monitoring("m", MonitoringArgs(retention="forever")), "retention"),
        (lambda p: Monitoring("m", MonitoringArgs(storage_gib=1)), "storage_gib"),
        (
            lambda p: Autoscaling(
                "a",
                AutoscalingArgs(cluster_name="", region="r", oidc_provider_arn="a", oidc_issuer_url="b"),
            ),
            "cluster_name",
        ),
    ],
)
def test_bad_input_registers_nothing_of_the_component(build: Any, field: str) -> None:
    recording, error = run_invalid(lambda: build(k8s.Provider("k8s", kubeconfig="{}")))
    assert error.field == field
    assert [r.type for r in recording] == ["pulumi:providers:kubernetes"]


def test_every_service_setting_a_model_service_shares_reaches_it() -> None:
    """The stack file's service settings that TritonModelServiceArgs also has go through as they are,
    except the canary (converted to a CanaryRelease): a new setting of both names cannot be dropped."""
    shared = set(ServiceConfig.model_fields) & {f.name for f in dataclasses.fields(TritonModelServiceArgs)}
    assert shared == {*SERVICE_SETTINGS_AS_GIVEN, "canary"}
    assert len(SERVICE_SETTINGS_AS_GIVEN) == len(set(SERVICE_SETTINGS_AS_GIVEN))
