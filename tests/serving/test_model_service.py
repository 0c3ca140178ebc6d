"""TritonModelService: every property under mocks, manifests against real schemas, and validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pulumi_kubernetes as k8s
import pytest

from inferstack.components import promql
from inferstack.infra.model_store import ModelStore
from inferstack.serving.model_service import (
    SPOT_NOTICE_S,
    ModelSource,
    TritonModelService,
    TritonModelServiceArgs,
    deployment,
    grace_period_s,
    headless_service,
    keda_queries,
    pdb_min_available,
    pod_disruption_budget,
    scaled_object,
    service,
    service_account,
    service_monitor,
)
from tests.harness import Recording, run_invalid, run_program
from tests.schemas import validate_custom_resource, validate_k8s

OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"
ROLE = "arn:aws:iam::123456789012:role/ranker-models"
URI = "s3://models/ranker"


def args(**overrides: Any) -> TritonModelServiceArgs:
    base = TritonModelServiceArgs(
        models=["ranker", "ranker-v2"], source=ModelSource(role_arn=ROLE, repository_uri=URI)
    )
    return dataclasses.replace(base, **overrides)


def build_with_store() -> TritonModelService:
    store = ModelStore("models")
    source = ModelSource(model_store=store, prefix="ranker", oidc_provider_arn=OIDC, oidc_issuer_url=ISSUER)
    provider = k8s.Provider("k8s", kubeconfig="{}")
    return TritonModelService("ranker", args(source=source, provider=provider))


@pytest.fixture(scope="module")
def recording() -> Recording:
    recorded, _ = run_program(build_with_store)
    return recorded


def spec(recording: Recording, token: str, name: str | None = None) -> dict[str, Any]:
    return recording.one(token, name).inputs


def container(recording: Recording) -> dict[str, Any]:
    containers = spec(recording, "kubernetes:apps/v1:Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


# --- identity and S3 -------------------------------------------------------------------------------


def test_service_account_uses_irsa_scoped_to_the_prefix(recording: Recording) -> None:
    account = spec(recording, "kubernetes:core/v1:ServiceAccount")["metadata"]
    assert account["annotations"]["eks.amazonaws.com/role-arn"].endswith("ranker-models-reader")
    role = recording.one("aws:iam/role:Role", "ranker-models-reader")
    assert role.parent_type == "inferstack:model_service:TritonModelService"
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:serving:ranker" in trust.values()
    policy = json.loads(recording.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert policy["Statement"][1]["Resource"].endswith("models-bucket/ranker/*")


def test_no_aws_keys_anywhere(recording: Recording) -> None:
    text = json.dumps([r.inputs for r in recording])
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    env = {e["name"]: e["value"] for e in container(recording)["env"]}
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_triton_arguments(recording: Recording) -> None:
    main = container(recording)
    assert main["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert main["args"][0] == "--model-repository=s3://models-bucket/ranker"
    assert "--model-control-mode=explicit" in main["args"]
    assert [a for a in main["args"] if a.startswith("--load-model=")] == [
        "--load-model=ranker",
        "--load-model=ranker-v2",
    ]
    assert "--exit-timeout-secs=80" in main["args"] and "--allow-metrics=true" in main["args"]
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }


# --- health, resources, placement -----------------------------------------------------------------------


def test_probes(recording: Recording) -> None:
    main = container(recording)
    startup = main["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # the model load timeout
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_gpu_and_resources(recording: Recording) -> None:
    resources = container(recording)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "9Gi"
    assert resources["requests"]["cpu"] == "3"
    pod = spec(recording, "kubernetes:apps/v1:Deployment")["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


@pytest.mark.parametrize(
    ("placement", "required", "preferred"),
    [
        ("on-demand", ["on-demand"], None),
        ("spot", ["spot"], None),
        ("spot-with-fallback", ["spot", "on-demand"], ["spot"]),
    ],
)
def test_placement(placement: str, required: list[str], preferred: list[str] | None) -> None:
    affinity = deployment("ranker", args(placement=placement), URI)["spec"]["template"]["spec"]["affinity"][
        "nodeAffinity"
    ]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ]
    by_key = {t["key"]: t["values"] for t in terms}
    assert by_key["inferstack.io/capacity-type"] == required
    assert by_key["nvidia.com/gpu.present"] == ["true"]
    assert ("inferstack.io/gpu-model" in by_key) == (placement == "on-demand")
    preferences = affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
    if preferred is None:
        assert preferences is None
    else:
        assert preferences[0]["preference"]["matchExpressions"][0]["values"] == preferred


@pytest.mark.parametrize(("environment", "zone_rule"), [("prod", "DoNotSchedule"), ("dev", "ScheduleAnyway")])
def test_spread_over_zones_and_nodes(environment: str, zone_rule: str) -> None:
    built = deployment("ranker", args(environment=environment, min_replicas=3), URI)
    constraints = {
        c["topologyKey"]: c for c in built["spec"]["template"]["spec"]["topologySpreadConstraints"]
    }
    assert constraints["topology.kubernetes.io/zone"]["maxSkew"] == 1
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == zone_rule
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_security_context(recording: Recording) -> None:
    security = container(recording)["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] > 0
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container(recording)["volumeMounts"]}
    assert {"/tmp", "/dev/shm"} <= mounts  # writable scratch beside the read-only root


def test_graceful_drain_fits_the_spot_notice(recording: Recording) -> None:
    pod = spec(recording, "kubernetes:apps/v1:Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert container(recording)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert 20 + 80 <= grace < SPOT_NOTICE_S
    strategy = spec(recording, "kubernetes:apps/v1:Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


# --- services, monitoring, autoscaling, disruption ------------------------------------------------------------


def test_services(recording: Recording) -> None:
    services = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in recording.of_type("kubernetes:core/v1:Service")
    }
    assert services["ranker"]["type"] == "ClusterIP"
    assert services["ranker-headless"]["clusterIP"] == "None"
    assert {p["port"] for p in services["ranker-headless"]["ports"]} == {8000, 8001, 8002}
    lb = service("ranker", args(internal_load_balancer=True))
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"


def test_service_monitor_scrapes_the_metrics_port(recording: Recording) -> None:
    monitor = spec(recording, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_scaled_object_triggers_are_the_shared_queries(recording: Recording) -> None:
    scaler = spec(recording, "kubernetes:keda.sh/v1alpha1:ScaledObject")["spec"]
    assert (scaler["minReplicaCount"], scaler["maxReplicaCount"]) == (3, 12)
    assert scaler["fallback"] == {"failureThreshold": 3, "replicas": 3}
    triggers = {t["name"]: t for t in scaler["triggers"]}
    for model in ("ranker", "ranker-v2"):
        queue = triggers[f"queue-time-{model}"]
        assert queue["metadata"]["query"] == promql.triton_queue_time_ms_times_replicas(
            model=model, namespace="serving"
        )
        assert queue["metadata"]["threshold"] == "50"
        pending = triggers[f"pending-{model}"]
        assert pending["metadata"]["query"] == promql.triton_pending_requests(
            model=model, namespace="serving"
        )
        assert pending["metadata"]["threshold"] == "16"
    assert all(t["metricType"] == "AverageValue" for t in triggers.values())
    assert all(
        t["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        for t in triggers.values()
    )
    behavior = scaler["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_gpu_trigger_is_optional() -> None:
    triggers = {
        t["name"]: t for t in scaled_object("ranker", args(gpu_utilization_target=70))["spec"]["triggers"]
    }
    assert triggers["gpu-utilization"]["metadata"]["query"] == promql.gpu_utilization_total(
        namespace="serving", pod_regex="ranker-.*"
    )
    assert triggers["gpu-utilization"]["metadata"]["threshold"] == "70"
    assert "gpu-utilization" not in keda_queries("ranker", args())


def test_disruption_budget_survives_a_zone_and_one_voluntary_disruption(recording: Recording) -> None:
    budget = spec(recording, "kubernetes:policy/v1:PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == pdb_min_available(3) == 2
    # Brute force: spread M pods over Z zones at maxSkew 1, remove the fullest zone, one pod must remain.
    for zones in range(1, 7):
        minimum = pdb_min_available(zones) if zones > 1 else None
        if minimum is None:
            continue
        fullest = -(-minimum // zones)
        assert minimum - fullest >= 1
        assert (minimum - 1) - (-(-(minimum - 1) // zones)) < 1, "the budget is the smallest that works"


def test_service_alerts_are_installed(recording: Recording) -> None:
    rule = spec(recording, "kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"TritonNoReadyReplica", "TritonAllRequestsFailing", "TritonQueueTimeHigh"}


def test_every_child_belongs_to_the_service(recording: Recording) -> None:
    kubernetes = [r for r in recording if r.type.startswith("kubernetes:")]
    assert sorted(r.type.rsplit(":", 1)[1] for r in kubernetes) == [
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert all(r.parent_type == "inferstack:model_service:TritonModelService" for r in kubernetes)


# --- manifests against real schemas ------------------------------------------------------------------------------


def test_first_party_manifests_validate_against_kubernetes_schemas() -> None:
    for built in (
        deployment("ranker", args(), URI),
        service("ranker", args()),
        service("ranker", args(internal_load_balancer=True)),
        headless_service("ranker", args()),
        service_account("ranker", args(), ROLE),
        pod_disruption_budget("ranker", args()),
    ):
        validate_k8s(built)


def test_custom_resources_validate_against_vendored_crds(vendor_dir: Path) -> None:
    validate_custom_resource(scaled_object("ranker", args(gpu_utilization_target=60)), vendor_dir)
    validate_custom_resource(service_monitor("ranker", args()), vendor_dir)


def test_schema_validation_does_catch_a_wrong_field() -> None:
    broken = deployment("ranker", args(), URI)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(Exception, match="livenesProbe"):
        validate_k8s(broken)


# --- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_replicas": 5, "max_replicas": 4}, "min_replicas"),
        ({"min_replicas": 2}, "min_replicas"),  # prod, 3 zones
        ({"gpus_per_replica": 2}, "gpus_per_replica"),  # g5.xlarge has 1 GPU
        ({"node_instance_type": "m6i.xlarge"}, "node_instance_type"),
        ({"node_instance_type": "g9.huge"}, "node_instance_type"),
        ({"memory_gib": 15}, "memory_gib"),  # g5.xlarge: 16 GiB
        ({"cpu": 4}, "cpu"),
        ({"queue_time_target_ms": 0}, "queue_time_target_ms"),
        ({"pending_requests_per_replica": -1}, "pending_requests_per_replica"),
        ({"gpu_utilization_target": 120}, "gpu_utilization_target"),
        ({"namespace": "Serving"}, "namespace"),
        ({"image": "nvcr.io/nvidia/tritonserver:latest"}, "image"),
        ({"image": "nvcr.io/nvidia/tritonserver"}, "image"),
        ({"exit_timeout_s": 100}, "exit_timeout_s"),
        ({"models": []}, "models"),
        ({"models": ["a/b"]}, "models[0]"),
        ({"placement": "cheap"}, "placement"),
        ({"fallback_replicas": 50}, "fallback_replicas"),
        ({"source": ModelSource(role_arn=ROLE)}, "source.repository_uri"),
        ({"source": ModelSource()}, "source"),
    ],
)
def test_bad_arguments_name_the_field_and_register_nothing(overrides: dict[str, Any], field: str) -> None:
    recording, error = run_invalid(lambda: TritonModelService("ranker", args(**overrides)))
    assert error.field == field, error
    assert recording.resources == []


def test_bad_service_name() -> None:
    recording, error = run_invalid(lambda: TritonModelService("Ranker_1", args()))
    assert error.field == "name" and recording.resources == []


def test_dev_allows_a_single_replica_without_blocking_drains() -> None:
    dev = args(environment="dev", min_replicas=1, zones=1)
    recording, _ = run_program(lambda: TritonModelService("ranker", dev))
    assert recording.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 0
    assert grace_period_s(dev) < SPOT_NOTICE_S
