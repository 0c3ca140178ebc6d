"""TritonModelService: every property under mocks, manifests against real schemas, and validation."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import mocks as pulumi_mocks

from inferstack.components import promql
from inferstack.components.model_repository import ServedModels
from inferstack.components.model_service import (
    ADMIN_KEY_HEADER,
    ModelSource,
    TritonModelService,
    TritonModelServiceArgs,
    deployment,
    grace_period_s,
    headless_service,
    pod_disruption_budget,
    prod_min_replicas,
    scaled_object,
    service,
    service_monitor,
)
from inferstack.components.model_service.args import SPOT_NOTICE_S
from inferstack.components.model_service.checks import validate
from inferstack.components.model_service.pod import (
    ADMIN_KEY_ENV,
    CACHE_SCRIPT,
    MODEL_REPOSITORY_DIR,
    NODE_CACHE_MOUNT,
    POD_FRONT,
    admin_key_secret,
    fill_models,
    front_config_map,
    front_container,
    model_cache_config_map,
    service_account,
    triton_args,
)
from inferstack.components.model_service.scaling import keda_queries
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.request_front import config_files
from inferstack.components.triton_telemetry import TraceSettings
from inferstack.infra import model_cache
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore
from inferstack.infra.node_plans import NODE_MODEL_CACHE_PATH
from tests.conftest import packages_loaded_by
from tests.harness import ACCOUNT_ID, REGION, Recording, answering, run_invalid, run_program
from tests.schemas import validate_custom_resource, validate_k8s

OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"
ROLE = "arn:aws:iam::123456789012:role/ranker-models"
URI = "s3://models/ranker"
COLLECTOR = "http://otel-collector.telemetry.svc:4318/v1/traces"
SERVICE = "inferstack:model_service:TritonModelService"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def args(**overrides: Any) -> TritonModelServiceArgs:
    base = TritonModelServiceArgs(
        models=["ranker", "ranker-v2"],
        source=ModelSource(role_arn=ROLE, repository_uri=URI),
        zones=3,
        region=REGION,
        cluster_has_crds=True,  # the component alone; the platform test covers the CRDs' order
    )
    return dataclasses.replace(base, **overrides)


def build_with_store() -> dict[str, Any]:
    store = ModelStore("models")
    source = ModelSource(model_store=store, prefix="ranker", oidc_provider_arn=OIDC, oidc_issuer_url=ISSUER)
    provider = k8s.Provider("k8s", kubeconfig="{}")
    triton = TritonModelService("ranker", args(source=source), pulumi.ResourceOptions(provider=provider))
    return {
        "namespace": triton.namespace,
        "http": triton.http_endpoint,
        "grpc": triton.grpc_endpoint,
        "role_arn": triton.role_arn,
    }


@pytest.fixture(scope="module")
def built() -> tuple[Recording, dict[str, Any]]:
    return run_program(build_with_store)


@pytest.fixture(scope="module")
def recording(built: tuple[Recording, dict[str, Any]]) -> Recording:
    return built[0]


def inputs(recording: Recording, token: str, name: str | None = None) -> dict[str, Any]:
    return recording.one(token, name).inputs


def pod_spec(recording: Recording) -> dict[str, Any]:
    result: dict[str, Any] = inputs(recording, DEPLOYMENT)["spec"]["template"]["spec"]
    return result


def container(recording: Recording) -> dict[str, Any]:
    containers = pod_spec(recording)["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def front(recording: Recording) -> dict[str, Any]:
    """The request front: the one init container that keeps running (a native sidecar)."""
    sidecars = [c for c in pod_spec(recording)["initContainers"] if c.get("restartPolicy") == "Always"]
    assert len(sidecars) == 1
    result: dict[str, Any] = sidecars[0]
    return result


def fill(recording: Recording) -> dict[str, Any]:
    fills = [c for c in pod_spec(recording)["initContainers"] if c["name"] == "model-cache"]
    assert len(fills) == 1
    result: dict[str, Any] = fills[0]
    return result


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return result


# --- identity and S3 -------------------------------------------------------------------------------


def test_service_account_uses_irsa_scoped_to_the_prefix(recording: Recording) -> None:
    account = inputs(recording, "kubernetes:core/v1:ServiceAccount")["metadata"]
    role = recording.one("aws:iam/role:Role", "ranker-models-reader")
    # The mocks give a role the ARN arn:aws:iam:<region>:<account>:<resource name>.
    assert account["annotations"] == {
        "eks.amazonaws.com/role-arn": f"arn:aws:iam:{REGION}:{ACCOUNT_ID}:ranker-models-reader"
    }
    assert pod_spec(recording)["serviceAccountName"] == account["name"] == "ranker"
    assert role.parent_type == SERVICE
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:ranker:ranker" in trust.values()
    policy = json.loads(recording.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert policy["Statement"][1]["Resource"].endswith("models-bucket/ranker/*")
    assert fill(recording)["args"][0] == "--source=s3://models-bucket/ranker"


def test_an_existing_role_is_used_as_given() -> None:
    recording, outputs = run_program(lambda: TritonModelService("ranker", args()).role_arn)
    assert outputs == ROLE
    annotations = inputs(recording, "kubernetes:core/v1:ServiceAccount")["metadata"]["annotations"]
    assert annotations == {"eks.amazonaws.com/role-arn": ROLE}
    assert not [r for r in recording if r.type.startswith("aws:")]
    assert fill(recording)["args"][0] == f"--source={URI}"


def test_no_aws_keys_anywhere(recording: Recording) -> None:
    text = json.dumps([r.inputs for r in recording])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert key not in text
    env = {e["name"]: e.get("value") for e in fill(recording)["env"]}
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    # Triton never talks to S3: the fill does, with the service account's IRSA role.
    assert not [e for e in container(recording)["env"] if e["name"].startswith("AWS_")]
    # The one Secret is Triton's admin key.
    assert [r.name for r in recording if r.type == "kubernetes:core/v1:Secret"] == ["ranker-admin-key"]


def test_triton_arguments(recording: Recording) -> None:
    main = container(recording)
    assert main["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert main["command"] == ["tritonserver"]
    assert "--model-control-mode=explicit" in main["args"]
    assert [a for a in main["args"] if a.startswith("--load-model=")] == [
        "--load-model=ranker",
        "--load-model=ranker-v2",
    ]
    for flag in (
        "--exit-timeout-secs=80",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        "--metrics-port=8002",
        "--grpc-port=8001",
        # HTTP on loopback, behind the request front; metrics would follow it there without this.
        "--http-address=127.0.0.1",
        "--http-port=8080",
        "--metrics-address=0.0.0.0",
    ):
        assert flag in main["args"]
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"grpc": 8001, "metrics": 8002}


def test_tracing_sends_sampled_spans_to_the_collector_and_logs_within_budget() -> None:
    """A 5 % sample is Triton 2.51's rate=20 (one request in every 20); the log writes no line per
    request unless the service asks for verbose lines (about 1.7 KB a request, infra.log_volume)."""
    collector = "http://otel-collector.telemetry.svc:4318/v1/traces"
    traced = deployment("ranker", args(tracing=TraceSettings(collector, sample_rate=0.05)), URI)
    given = traced["spec"]["template"]["spec"]["containers"][0]["args"]
    assert given[: len(triton_args(args(), MODEL_REPOSITORY_DIR))] == triton_args(
        args(), MODEL_REPOSITORY_DIR
    )
    settings = [given[i + 1] for i, flag in enumerate(given) if flag == "--trace-config"]
    assert settings == [
        "mode=opentelemetry",
        "rate=20",
        "level=TIMESTAMPS",
        f"opentelemetry,url={collector}",
        "opentelemetry,resource=service.name=ranker",
    ]
    assert given[-2:] == ["--log-format=ISO8601", "--log-verbose=0"]
    verbose = deployment("ranker", args(tracing=TraceSettings(collector), log_verbose=1), URI)
    assert verbose["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--log-verbose=1"
    plain = deployment("ranker", args(), URI)["spec"]["template"]["spec"]["containers"][0]["args"]
    # no tracing asked for: no trace flags, and the log level said outright
    assert plain == [*triton_args(args(), MODEL_REPOSITORY_DIR), "--log-format=ISO8601", "--log-verbose=0"]
    with pytest.raises(InvalidInput) as caught:
        validate("ranker", args(log_verbose=2))
    assert caught.value.field == "log_verbose"


# --- Triton's admin APIs -------------------------------------------------------------------------------

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine marks a secret value


def test_triton_admin_apis_answer_only_the_services_key_on_both_protocols(recording: Recording) -> None:
    main = container(recording)
    rule = f"model-repository,shared-memory,trace,logging:{ADMIN_KEY_HEADER}=$({ADMIN_KEY_ENV})"
    assert [a for a in main["args"] if "restricted" in a] == [
        f"--http-restricted-api={rule}",
        f"--grpc-restricted-protocol={rule}",
    ]
    # Kubernetes expands $(INFERSTACK_ADMIN_KEY) from the container's env, which reads the Secret.
    assert {
        "name": ADMIN_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": "ranker-admin-key", "key": "admin-key"}},
    } in main["env"]


def test_the_admin_key_is_generated_kept_secret_and_only_in_its_secret(recording: Recording) -> None:
    password = recording.one("random:index/randomPassword:RandomPassword")
    assert password.inputs == {"length": 32, "special": False} and password.parent_type == SERVICE
    secret = recording.one("kubernetes:core/v1:Secret")
    assert secret.parent_type == SERVICE and secret.inputs["metadata"]["namespace"] == "ranker"
    # Marked secret for the engine: encrypted in Pulumi's state.
    data = secret.inputs["stringData"]
    assert data[SECRET_SIG] and data["value"] == {"admin-key": "mock-password"}
    # Nowhere else in plain text: not in the Deployment's pod spec, nor any other input.
    others = [r.inputs for r in recording if r is not secret and r is not password]
    assert "mock-password" not in json.dumps(others)
    assert secret.urn in recording.one(DEPLOYMENT).dependencies  # pods need it to start


def test_the_admin_key_secret_validates_against_the_kubernetes_schema(recording: Recording) -> None:
    validate_k8s(admin_key_secret("ranker", args(), "k" * 32))
    recorded = recording.one("kubernetes:core/v1:Secret").inputs
    validate_k8s({**recorded, "stringData": recorded["stringData"]["value"]})


# --- health, resources, placement -----------------------------------------------------------------------


def test_probes(recording: Recording) -> None:
    main = container(recording)
    startup = main["startupProbe"]
    # Through the front (Triton's HTTP is on loopback), by number: a port name means the probe's own
    # container's port. Liveness straight at Triton: a restarting front must not restart Triton.
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert main["livenessProbe"]["grpc"] == {"port": 8001}
    sidecar = front(recording)
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/request-front/live", "port": "http"}


@pytest.mark.parametrize("load_s", [30, 600, 905, 3600])
def test_startup_probe_is_sized_to_the_model_load_time(load_s: int) -> None:
    startup = pod_of(deployment("ranker", args(model_load_timeout_s=load_s), URI))["containers"][0][
        "startupProbe"
    ]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert load_s <= budget < load_s + startup["periodSeconds"]
    progress = deployment("ranker", args(model_load_timeout_s=load_s), URI)["spec"]["progressDeadlineSeconds"]
    assert progress > budget  # a slow but healthy first load is not a failed rollout


def test_gpu_and_resources(recording: Recording) -> None:
    resources = container(recording)["resources"]
    assert resources["limits"] == {"cpu": "3", "memory": "10Gi", "nvidia.com/gpu": "1"}
    requests = dict(resources["requests"])
    assert requests.pop("ephemeral-storage") == "44Gi"  # the model cache and scratch space
    assert requests == resources["limits"]  # Guaranteed QoS
    pod = pod_spec(recording)
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    big = args(node_instance_type="g5.12xlarge", gpus_per_replica=4, memory_gib=64, cpu=32)
    limits = pod_of(deployment("ranker", big, URI))["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "32", "memory": "64Gi", "nvidia.com/gpu": "4"}


@pytest.mark.parametrize(
    ("placement", "required", "preferred"),
    [
        ("on-demand", ["on-demand"], None),
        ("spot", ["spot"], None),
        ("spot-with-fallback", ["spot", "on-demand"], ["spot"]),
    ],
)
def test_placement(placement: str, required: list[str], preferred: list[str] | None) -> None:
    built = args(placement=placement, node_instance_type="g6.xlarge")
    affinity = pod_of(deployment("ranker", built, URI))["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1  # terms are ORed: every requirement must sit in the one term
    by_key = {t["key"]: t["values"] for t in terms[0]["matchExpressions"]}
    assert by_key["inferstack.io/capacity-type"] == required
    assert by_key["nvidia.com/gpu.present"] == ["true"]
    # Spot groups mix GPU types and carry no GPU model label; on demand it is pinned to the type's GPU.
    assert by_key.get("inferstack.io/gpu-model") == (["L4"] if placement == "on-demand" else None)
    preferences = affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
    if preferred is None:
        assert preferences is None
    else:
        assert preferences[0]["preference"]["matchExpressions"] == [
            {"key": "inferstack.io/capacity-type", "operator": "In", "values": preferred}
        ]


@pytest.mark.parametrize(
    ("environment", "zone_rule"),
    [("prod", "DoNotSchedule"), ("dev", "ScheduleAnyway")],
)
def test_spread_over_zones_and_nodes(environment: str, zone_rule: str) -> None:
    built = deployment("ranker", args(environment=environment), URI)
    pod_labels = built["spec"]["template"]["metadata"]["labels"]
    constraints = {c["topologyKey"]: c for c in pod_of(built)["topologySpreadConstraints"]}
    assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    zone = constraints["topology.kubernetes.io/zone"]
    # No minDomains: what it does to a zone loss is tests/components/test_zone_loss.py's subject.
    assert (zone["maxSkew"], zone["whenUnsatisfiable"], zone.get("minDomains")) == (1, zone_rule, None)
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in constraints.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_security_context(recording: Recording) -> None:
    main = container(recording)
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(security["runAsUser"]) > 0  # numeric: runAsNonRoot can check it
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(recording)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every place Triton writes is a writable emptyDir beside the read-only root.
    empty_dirs = {v["name"] for v in pod_spec(recording)["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert {"/tmp", "/dev/shm", MODEL_REPOSITORY_DIR} <= set(mounts)
    assert set(mounts.values()) <= empty_dirs
    assert env["HOME"] in mounts


def test_graceful_drain_fits_the_spot_notice(recording: Recording) -> None:
    grace = pod_spec(recording)["terminationGracePeriodSeconds"]
    assert container(recording)["lifecycle"]["preStop"] == {"sleep": {"seconds": 20}}
    assert "--exit-timeout-secs=80" in container(recording)["args"]
    assert 20 + 80 < grace < SPOT_NOTICE_S  # drain, then Triton's own exit, then SIGKILL
    strategy = inputs(recording, DEPLOYMENT)["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    custom = pod_of(deployment("ranker", args(drain_s=30, exit_timeout_s=60), URI))
    assert custom["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 30
    assert custom["terminationGracePeriodSeconds"] == grace_period_s(args(drain_s=30, exit_timeout_s=60)) > 90


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Resource options as the engine receives them (the recording keeps inputs only)."""
    seen: dict[str, Any] = {}
    register = pulumi_mocks.MockMonitor.RegisterResource

    def spy(monitor: Any, request: Any) -> Any:
        seen[request.name] = request
        return register(monitor, request)

    monkeypatch.setattr(pulumi_mocks.MockMonitor, "RegisterResource", spy)
    yield seen


def test_pulumi_waits_for_the_rollout_and_leaves_replicas_to_keda(registrations: dict[str, Any]) -> None:
    run_program(lambda: TritonModelService("ranker", args(model_load_timeout_s=1200)))
    request = registrations["ranker-deployment"]
    assert list(request.ignoreChanges) == ["spec.replicas"]
    # Its pods mount the request front's files.
    assert [u for u in request.dependencies if u.endswith("::ranker-request-front")]
    deadline = deployment("ranker", args(model_load_timeout_s=1200), URI)["spec"]["progressDeadlineSeconds"]
    for timeout in (request.customTimeouts.create, request.customTimeouts.update):
        assert timeout.endswith("s") and int(timeout[:-1]) > deadline


# --- the request front ----------------------------------------------------------------------------------


def test_the_request_front_is_a_native_sidecar_that_owns_the_http_port(recording: Recording) -> None:
    sidecar = front(recording)
    # An init container that keeps running: started before Triton, stopped only after Triton has
    # exited, so what is in flight through it during Triton's drain is answered.
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "public.ecr.aws/docker/library/nginx:1.28.0"
    assert sidecar["command"] == ["nginx", "-e", "stderr", "-c", "/etc/request-front/nginx.conf"]
    assert sidecar["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "front-metrics", "containerPort": 8003, "protocol": "TCP"},
    ]
    assert "lifecycle" not in sidecar  # no preStop of its own: the kubelet's sidecar order keeps it up
    pod = pod_spec(recording)
    assert pod["terminationGracePeriodSeconds"] == 20 + 80 + 5


def test_the_pod_stays_guaranteed_with_the_front(recording: Recording) -> None:
    """Every container, the sidecar included, requests what it is limited to (cpu and memory)."""
    for each in (front(recording), fill(recording), container(recording)):
        requests, limits = each["resources"]["requests"], each["resources"]["limits"]
        assert requests["cpu"] == limits["cpu"] and requests["memory"] == limits["memory"]
    assert front(recording)["resources"]["limits"] == {"cpu": "0.25", "memory": "1536Mi"}


def test_the_fill_runs_in_tritons_image_as_triton_with_irsa_only(recording: Recording) -> None:
    """No other image to pin or pull, no other identity: the pod's IRSA role, the image's user, a
    read-only root filesystem; no probes (Kubernetes refuses them on a run-to-completion init container);
    no static keys; the models Triton loads."""
    step, triton = fill(recording), container(recording)
    assert step["image"] == triton["image"]
    loaded = [a.removeprefix("--load-model=") for a in triton["args"] if a.startswith("--load-model=")]
    assert f"--models={','.join(loaded)}" in step["args"] and len(loaded) > 1
    assert step["securityContext"] == triton["securityContext"]
    assert "restartPolicy" not in step and not {"startupProbe", "readinessProbe", "livenessProbe"} & set(step)
    env = {e["name"]: e["value"] for e in step["env"]}
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)


def test_the_front_runs_read_only_from_its_config_map(recording: Recording) -> None:
    sidecar = front(recording)
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 101  # the image's nginx user
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in pod_spec(recording)["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    config = mounts["/etc/request-front"]
    assert config["readOnly"] is True
    assert volumes[config["name"]]["configMap"] == {"name": "ranker-request-front"}
    assert "emptyDir" in volumes[mounts["/tmp/request-front"]["name"]]
    recorded = inputs(recording, "kubernetes:core/v1:ConfigMap", "ranker-request-front")
    assert recorded["data"] == config_files(POD_FRONT)
    assert recorded["metadata"]["namespace"] == "ranker"
    # nginx reads its files once: the pod template carries their digest, so a change rolls the pods.
    annotations = inputs(recording, DEPLOYMENT)["spec"]["template"]["metadata"]["annotations"]
    digest = hashlib.sha256(json.dumps(recorded["data"], sort_keys=True).encode()).hexdigest()
    assert annotations == {
        "inferstack.io/request-front-sha256": digest,
        "inferstack.io/model-cache-sha256": hashlib.sha256(
            Path(model_cache.__file__).read_text().encode()
        ).hexdigest(),
        "inferstack.io/served-versions": "{}",
    }


# --- services, monitoring, autoscaling, disruption ------------------------------------------------------------


def test_services(recording: Recording) -> None:
    services = {
        r.inputs["metadata"]["name"]: r.inputs for r in recording.of_type("kubernetes:core/v1:Service")
    }
    pod_labels = inputs(recording, DEPLOYMENT)["spec"]["template"]["metadata"]["labels"]
    main, headless = services["ranker"], services["ranker-headless"]
    assert main["spec"]["type"] == "ClusterIP" and not main["metadata"].get("annotations")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
        "front-metrics": 8003,
    }
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    for spec in (main["spec"], headless["spec"]):
        assert spec["selector"].items() <= pod_labels.items()


def test_no_load_balancer_option_without_a_controller_to_serve_it() -> None:
    # An NLB Service for the AWS Load Balancer Controller stays Pending for ever on a cluster that
    # does not run one, and inferstack installs none: the option is gone, not silently broken.
    assert "internal_load_balancer" not in {f.name for f in dataclasses.fields(TritonModelServiceArgs)}


def test_service_monitor_scrapes_each_pod_once(recording: Recording) -> None:
    monitor = inputs(recording, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ranker"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        r.inputs["metadata"]["name"]
        for r in recording.of_type("kubernetes:core/v1:Service")
        if selector.items() <= r.inputs["metadata"]["labels"].items()
        and any(p["name"] == "metrics" for p in r.inputs["spec"]["ports"])
    ]
    assert scraped == ["ranker"]  # two would double every sum the autoscaler reads
    custom = service_monitor("ranker", args(service_monitor_labels={"prometheus": "platform"}))
    assert custom["metadata"]["labels"]["prometheus"] == "platform"
    assert "release" not in custom["metadata"]["labels"]


def test_scaled_object_triggers_are_the_shared_queries(recording: Recording) -> None:
    scaler = inputs(recording, "kubernetes:keda.sh/v1alpha1:ScaledObject")["spec"]
    assert scaler["scaleTargetRef"] == {"name": inputs(recording, DEPLOYMENT)["metadata"]["name"]}
    assert (scaler["minReplicaCount"], scaler["maxReplicaCount"]) == (3, 12)
    assert (scaler["pollingInterval"], scaler["cooldownPeriod"]) == (15, 300)
    assert scaler["fallback"] == {"failureThreshold": 3, "replicas": 3}
    triggers = {t["name"]: t for t in scaler["triggers"]}
    assert set(triggers) == {
        "queue-time-ranker",
        "pending-ranker",
        "queue-time-ranker-v2",
        "pending-ranker-v2",
    }
    for model in ("ranker", "ranker-v2"):
        # Time per request is already per replica: Value, and the HPA multiplies by the ready pods.
        queue = triggers[f"queue-time-{model}"]
        assert queue["metadata"]["query"] == promql.triton_queue_time_per_request_ms(
            model=model, namespace="ranker"
        )
        assert (queue["metricType"], queue["metadata"]["threshold"]) == ("Value", "50")
        # Pending requests are a total: AverageValue, and the HPA divides by the replicas.
        pending = triggers[f"pending-{model}"]
        assert pending["metadata"]["query"] == promql.triton_pending_requests(model=model, namespace="ranker")
        assert (pending["metricType"], pending["metadata"]["threshold"]) == ("AverageValue", "16")
    assert all(t["type"] == "prometheus" for t in triggers.values())
    # KEDA's Prometheus scaler reads an empty answer as 0 unless told otherwise: a broken scrape would
    # scale the service to its minimum instead of falling back.
    assert all(t["metadata"]["ignoreNullValues"] == "false" for t in triggers.values())
    assert all(
        t["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        for t in triggers.values()
    )
    behavior = scaler["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_scaler_settings_are_configurable() -> None:
    custom = args(
        prometheus_server_address="http://prometheus.observability.svc:9090",
        min_replicas=4,
        max_replicas=20,
        fallback_replicas=8,
        polling_interval_s=5,
        cooldown_s=600,
        queue_time_target_ms=12.5,
    )
    spec = scaled_object("ranker", custom)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["fallback"]["replicas"]) == (4, 20, 8)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (5, 600)
    assert {t["metadata"]["serverAddress"] for t in spec["triggers"]} == {
        "http://prometheus.observability.svc:9090"
    }
    assert spec["triggers"][0]["metadata"]["threshold"] == "12.5"


def test_gpu_trigger_is_optional() -> None:
    triggers = {
        t["name"]: t for t in scaled_object("ranker", args(gpu_utilization_target=70))["spec"]["triggers"]
    }
    assert triggers["gpu-utilization"]["metadata"]["query"] == promql.gpu_utilization(
        namespace="ranker", pod_regex=promql.deployment_pod_regex(service="ranker")
    )
    assert (
        triggers["gpu-utilization"]["metricType"],
        triggers["gpu-utilization"]["metadata"]["threshold"],
    ) == (
        "Value",
        "70",
    )
    assert "gpu-utilization" not in keda_queries("ranker", args())


def spreads(replicas: int, zones: int) -> Iterator[tuple[int, ...]]:
    """Every way maxSkew 1 can place ``replicas`` pods over ``zones`` zones."""
    low = replicas // zones
    for extra in itertools.combinations(range(zones), replicas - low * zones):
        yield tuple(low + (zone in extra) for zone in range(zones))


def survives(placement: tuple[int, ...], min_available: int) -> bool:
    """Whether every set of pods the budget lets evictions leave keeps one pod through any zone loss."""
    for kept in itertools.product(*(range(n + 1) for n in placement)):
        if sum(kept) >= min_available and any(sum(kept) - lost < 1 for lost in kept):
            return False
    return True


@pytest.mark.parametrize("zones", [2, 3, 4])
def test_budget_survives_a_zone_loss_after_voluntary_disruptions(zones: int) -> None:
    # The budget lets one pod go at a time, so min_available is always one less than the replicas.
    for replicas in range(prod_min_replicas(zones), 13):
        assert all(survives(p, replicas - 1) for p in spreads(replicas, zones)), replicas
    # One replica fewer: either fewer than one per zone, or one drain and a zone loss take everything.
    fewer = prod_min_replicas(zones) - 1
    if fewer >= zones:
        assert not all(survives(p, fewer - 1) for p in spreads(fewer, zones))


def test_disruption_budget_in_the_cluster(recording: Recording) -> None:
    budget = inputs(recording, "kubernetes:policy/v1:PodDisruptionBudget")["spec"]
    pod_labels = inputs(recording, DEPLOYMENT)["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    # However far KEDA scales out, a drain takes one pod at a time: a minAvailable sized for the
    # minimum (2 of 3) would let it take 10 of 12 at once.
    for replicas in (3, 6):
        spec = pod_disruption_budget("ranker", args(min_replicas=replicas))["spec"]
        assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec


def test_dev_allows_a_single_replica_without_blocking_drains() -> None:
    dev = args(environment="dev", min_replicas=1, zones=1)
    recording, _ = run_program(lambda: TritonModelService("ranker", dev))
    assert inputs(recording, "kubernetes:policy/v1:PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_service_alerts_are_installed(recording: Recording) -> None:
    rule = inputs(recording, "kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"TritonNoReadyReplica", "TritonAllRequestsFailing", "TritonQueueTimeHigh"}


# --- the component ------------------------------------------------------------------------------------------------


def test_every_child_belongs_to_the_service_in_its_own_namespace(
    built: tuple[Recording, dict[str, Any]],
) -> None:
    recording, outputs = built
    kubernetes = [r for r in recording if r.type.startswith("kubernetes:") and r.custom]
    assert sorted(r.type.rsplit(":", 1)[1] for r in kubernetes) == [
        "ConfigMap",  # the request front's
        "ConfigMap",  # the model-cache fill script
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Secret",  # Triton's admin key
        "Service",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert all(r.parent_type == SERVICE for r in kubernetes)
    assert inputs(recording, "kubernetes:core/v1:Namespace")["metadata"]["name"] == "ranker"
    assert {
        r.inputs["metadata"]["namespace"] for r in kubernetes if r.type != "kubernetes:core/v1:Namespace"
    } == {"ranker"}
    assert outputs == {
        "namespace": "ranker",
        "http": "http://ranker.ranker.svc:8000",
        "grpc": "dns:///ranker-headless.ranker.svc:8001",
        "role_arn": f"arn:aws:iam:{REGION}:{ACCOUNT_ID}:ranker-models-reader",
    }


def test_a_given_namespace_is_used_and_not_created() -> None:
    shared = args(namespace="serving", create_namespace=False)
    recording, _ = run_program(lambda: TritonModelService("ranker", shared))
    assert not recording.of_type("kubernetes:core/v1:Namespace")
    namespaces = {r.inputs["metadata"]["namespace"] for r in recording if r.type.startswith("kubernetes:")}
    assert namespaces == {"serving"}
    queries = keda_queries("ranker", shared)
    assert queries["pending-ranker"] == promql.triton_pending_requests(model="ranker", namespace="serving")


def test_importing_the_component_pulls_in_no_serving_runtime() -> None:
    loaded = packages_loaded_by("inferstack.components.model_service")
    assert "pulumi" in loaded and not loaded & {"torch", "tritonclient", "moto"}


# --- manifests against real schemas ------------------------------------------------------------------------------

VARIANTS = [
    args(),
    args(tracing=TraceSettings(COLLECTOR)),
    args(environment="dev", min_replicas=1, zones=1, placement="spot"),
    args(placement="on-demand", gpu_utilization_target=60),
    args(node_instance_type="g5.12xlarge", gpus_per_replica=4, memory_gib=120.5, cpu=40, shm_gib=16),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_party_manifests_validate_against_kubernetes_schemas(variant: TritonModelServiceArgs) -> None:
    for manifest in (
        deployment("ranker", variant, URI),
        service("ranker", variant),
        headless_service("ranker", variant),
        service_account("ranker", variant, ROLE),
        pod_disruption_budget("ranker", variant),
        front_config_map("ranker", variant),
        model_cache_config_map("ranker", variant),
    ):
        validate_k8s(manifest)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_validate_against_vendored_crds(
    variant: TritonModelServiceArgs, vendor_dir: Path
) -> None:
    validate_custom_resource(scaled_object("ranker", variant), vendor_dir)
    validate_custom_resource(service_monitor("ranker", variant), vendor_dir)


def test_recorded_resources_validate_as_the_engine_received_them(
    recording: Recording, vendor_dir: Path
) -> None:
    """What the component registered (outputs resolved), not only what the pure builders return."""
    for token in (
        DEPLOYMENT,
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:policy/v1:PodDisruptionBudget",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:ConfigMap",
    ):
        for recorded in recording.of_type(token):
            group_version, kind = token.removeprefix("kubernetes:").rsplit(":", 1)
            api_version = group_version.removeprefix("core/")
            validate_k8s({"apiVersion": api_version, "kind": kind, **recorded.inputs})
    for token in (
        "kubernetes:keda.sh/v1alpha1:ScaledObject",
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
    ):
        validate_custom_resource(inputs(recording, token), vendor_dir)


def test_schema_validation_does_catch_a_wrong_field(vendor_dir: Path) -> None:
    broken = deployment("ranker", args(), URI)
    pod_of(broken)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(Exception, match="livenesProbe"):
        validate_k8s(broken)
    scaler = scaled_object("ranker", args())
    scaler["spec"]["fallback"]["replica"] = 3
    with pytest.raises(Exception, match="replica"):
        validate_custom_resource(scaler, vendor_dir)


# --- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_replicas": 5, "max_replicas": 4}, "min_replicas"),
        ({"min_replicas": 0}, "min_replicas"),
        ({"min_replicas": 2}, "min_replicas"),  # prod, 3 zones
        ({"zones": 2, "min_replicas": 3}, "min_replicas"),  # prod, 2 zones: 2 + 1 could share a zone
        ({"zones": 1, "min_replicas": 3}, "zones"),  # prod cannot survive the loss of its only zone
        ({"zones": 0, "environment": "dev"}, "zones"),
        ({"gpus_per_replica": 2}, "gpus_per_replica"),  # g5.xlarge has 1 GPU
        ({"gpus_per_replica": 0}, "gpus_per_replica"),
        ({"node_instance_type": "m6i.xlarge"}, "node_instance_type"),
        ({"node_instance_type": "g9.huge"}, "node_instance_type"),
        ({"memory_gib": 13}, "memory_gib"),  # g5.xlarge: 16 GiB, 4 kept for the system
        ({"memory_gib": 11}, "memory_gib"),  # ... and 1.5 for the request front
        ({"cpu": 3.5}, "cpu"),  # g5.xlarge: 4 vCPUs, 0.5 for the system and 0.5 for the front
        ({"memory_gib": 0}, "memory_gib"),
        ({"shm_gib": 10}, "shm_gib"),  # /dev/shm comes out of memory_gib
        ({"shm_gib": 0}, "shm_gib"),
        ({"cpu": 4}, "cpu"),
        ({"model_cache_gib": 0}, "model_cache_gib"),
        ({"node_cache_gib": 30}, "node_cache_gib"),  # below model_cache_gib (40): a pod's files must fit
        ({"manifest_wait_s": -1}, "manifest_wait_s"),
        ({"manifest_wait_s": 7200}, "manifest_wait_s"),
        ({"queue_time_target_ms": 0}, "queue_time_target_ms"),
        ({"pending_requests_per_replica": -1}, "pending_requests_per_replica"),
        ({"gpu_utilization_target": 120}, "gpu_utilization_target"),
        ({"gpu_utilization_target": 0}, "gpu_utilization_target"),
        ({"model_load_timeout_s": 0}, "model_load_timeout_s"),
        ({"polling_interval_s": 0}, "polling_interval_s"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"namespace": "Serving"}, "namespace"),
        ({"namespace": "a" * 64}, "namespace"),
        ({"image": "nvcr.io/nvidia/tritonserver:latest"}, "image"),
        ({"image": "nvcr.io/nvidia/tritonserver"}, "image"),
        ({"image": "registry:5000/tritonserver"}, "image"),
        ({"exit_timeout_s": 100}, "exit_timeout_s"),  # 20 + 100 + 5 > the 120 s spot notice
        ({"exit_timeout_s": 5}, "exit_timeout_s"),
        ({"drain_s": 2}, "drain_s"),
        ({"models": []}, "models"),
        ({"models": ["a/b"]}, "models[0]"),
        ({"models": ["a", "a"]}, "models"),
        ({"placement": "cheap"}, "placement"),
        ({"environment": "staging"}, "environment"),
        ({"region": "mars-1"}, "region"),
        ({"fallback_replicas": 50}, "fallback_replicas"),
        ({"prometheus_server_address": "prometheus:9090"}, "prometheus_server_address"),
        ({"service_monitor_labels": {"release": "not ok!"}}, "service_monitor_labels"),
        ({"source": ModelSource(role_arn=ROLE)}, "source.repository_uri"),
        ({"source": ModelSource(role_arn=ROLE, repository_uri="/models")}, "source.repository_uri"),
        ({"source": ModelSource()}, "source"),
        ({"tracing": TraceSettings(COLLECTOR, sample_rate=0)}, "tracing.sample_rate"),
        ({"tracing": TraceSettings(COLLECTOR, sample_rate=1.5)}, "tracing.sample_rate"),
        ({"tracing": TraceSettings("http://otel-collector:4318", sample_rate=0.1)}, "tracing.url"),
        ({"tracing": TraceSettings(COLLECTOR, sample_rate="all")}, "tracing.sample_rate"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_name_the_field_and_register_nothing(overrides: dict[str, Any], field: str) -> None:
    recording, error = run_invalid(lambda: TritonModelService("ranker", args(**overrides)))
    assert error.field == field, error
    assert recording.resources == []


def store_source(**overrides: Any) -> Any:
    def program() -> None:
        store = ModelStore("models")
        fields = {
            "model_store": store,
            "prefix": "ranker",
            "oidc_provider_arn": OIDC,
            "oidc_issuer_url": ISSUER,
        }
        source = ModelSource(**(fields | overrides))
        TritonModelService("ranker", args(source=source))

    return program


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prefix": None}, "source.prefix"),
        ({"prefix": "../other"}, "source.prefix"),
        ({"oidc_issuer_url": None}, "source.oidc_provider_arn"),
        ({"role_arn": ROLE}, "source"),
    ],
)
def test_bad_model_store_sources_register_nothing_of_the_service(
    overrides: dict[str, Any], field: str
) -> None:
    recording, error = run_invalid(store_source(**overrides))
    assert error.field == field, error
    # The user's ModelStore was registered before; the service added nothing, not even itself.
    assert not [r for r in recording if r.type == SERVICE or r.type.startswith("kubernetes:")]
    assert not recording.of_type("aws:iam/role:Role")


@pytest.mark.parametrize("name", ["Ranker", "ranker_1", "1ranker", "ranker-", "r" * 43])
def test_bad_service_name(name: str) -> None:
    recording, error = run_invalid(lambda: TritonModelService(name, args()))
    assert error.field == "name" and recording.resources == []


def test_the_longest_name_fits_every_object() -> None:
    name = "r" * 42
    recording, _ = run_program(lambda: TritonModelService(name, args()))
    assert len(headless_service(name, args())["metadata"]["name"]) <= 63  # Service names
    assert len(f"{name}-models-reader-") + 7 <= 64  # the IRSA role: Pulumi appends 7 random characters
    assert recording.one(DEPLOYMENT).inputs["metadata"]["name"] == name


def test_the_region_comes_from_the_components_aws_provider() -> None:
    """No region given: the service reads the bucket in the region of the AWS provider it was given."""

    def program() -> None:
        west = aws.Provider("west", region="eu-west-1")
        TritonModelService(
            "ranker",
            dataclasses.replace(args(), region=None),
            pulumi.ResourceOptions(providers=[west, k8s.Provider("k8s", kubeconfig="{}")]),
        )

    answers = answering("aws:index/getRegion:getRegion", name="eu-west-1", region="eu-west-1", id="eu-west-1")
    recording, _ = run_program(program, invokes=answers)
    deployment = recording.one("kubernetes:apps/v1:Deployment")
    fills = [
        c
        for c in deployment.inputs["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == "model-cache"
    ]
    env = {e["name"]: e.get("value") for e in fills[0]["env"]}
    assert env["AWS_REGION"] == "eu-west-1"
    assert "providers:kubernetes::k8s" in deployment.provider


def test_a_service_needs_to_be_told_its_zones() -> None:
    with pytest.raises(TypeError):
        TritonModelServiceArgs(models=["m"], source=ModelSource(role_arn=ROLE, repository_uri=URI))  # type: ignore[call-arg]


# --- the model-cache init container ---------------------------------------------------------------------


def test_the_fill_runs_first_restricted_and_alone_holds_the_node_cache(recording: Recording) -> None:
    """Order: fill, then the front (a native sidecar), then Triton; the fill is restricted like Triton;
    the hostPath reaches the fill only, and Triton reads the filled folder read-only."""
    pod = pod_spec(recording)
    assert [c["name"] for c in pod["initContainers"]] == ["model-cache", "request-front"]
    step = fill(recording)
    assert "restartPolicy" not in step  # runs to completion before the next one starts
    security = step["securityContext"]
    assert (
        security["runAsNonRoot"] is True
        and security["runAsUser"] == container(recording)["securityContext"]["runAsUser"]
    )
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert step["resources"]["requests"] == step["resources"]["limits"]  # Guaranteed QoS kept
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {name for name, v in volumes.items() if "hostPath" in v}
    assert host_paths == {"node-model-cache"}
    assert volumes["node-model-cache"]["hostPath"] == {
        "path": NODE_MODEL_CACHE_PATH,
        "type": "DirectoryOrCreate",
    }
    fill_mounts = {m["name"]: m for m in step["volumeMounts"]}
    assert fill_mounts["node-model-cache"]["mountPath"] == NODE_CACHE_MOUNT
    assert fill_mounts["model-cache-script"].get("readOnly") is True
    for other in [container(recording), front(recording)]:
        assert not host_paths & {m["name"] for m in other["volumeMounts"]}
    triton_mounts = {m["mountPath"]: m for m in container(recording)["volumeMounts"]}
    assert triton_mounts[MODEL_REPOSITORY_DIR]["readOnly"] is True
    assert "emptyDir" in volumes[triton_mounts[MODEL_REPOSITORY_DIR]["name"]]
    assert container(recording)["args"][0] == f"--model-repository={MODEL_REPOSITORY_DIR}"


def test_the_fill_is_told_the_models_the_bound_and_the_wait(recording: Recording) -> None:
    step = fill(recording)
    assert step["image"] == container(recording)["image"]  # one image to pull on a new node
    assert step["command"] == ["python3", f"/opt/inferstack/{CACHE_SCRIPT}"]
    assert step["args"] == [
        "--source=s3://models-bucket/ranker",  # the ModelStore's bucket and the service's prefix
        "--models=ranker,ranker-v2",
        f"--cache={NODE_CACHE_MOUNT}",
        f"--repository={MODEL_REPOSITORY_DIR}",
        "--max-gib=150",
        "--wait-s=600",
    ]


def test_the_fill_script_is_the_module_and_a_change_rolls_the_pods(recording: Recording) -> None:
    recorded = inputs(recording, "kubernetes:core/v1:ConfigMap", "ranker-model-cache")
    source = Path(model_cache.__file__).read_text()
    assert recorded["data"] == {CACHE_SCRIPT: source}
    annotations = inputs(recording, DEPLOYMENT)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["inferstack.io/model-cache-sha256"] == hashlib.sha256(source.encode()).hexdigest()
    volumes = {v["name"]: v for v in pod_spec(recording)["volumes"]}
    assert volumes["model-cache-script"]["configMap"] == {"name": "ranker-model-cache"}
    deployment_record = recording.one(DEPLOYMENT)
    assert [
        u for u in deployment_record.dependencies if u.endswith("::ranker-model-cache")
    ]  # mounted at start


def test_the_rollout_deadline_covers_the_manifest_wait(recording: Recording) -> None:
    spec = inputs(recording, DEPLOYMENT)["spec"]
    assert spec["progressDeadlineSeconds"] == 900 + 600 + 600  # node and image, manifest wait, model load


def test_a_service_without_what_installs_its_crds_is_refused_before_anything_is_registered() -> None:
    """Its ServiceMonitor, PrometheusRules and ScaledObject need the Monitoring and Autoscaling
    components' CRDs: composed without them (and not told the cluster has them), it says what to add."""
    recording, error = run_invalid(lambda: TritonModelService("ranker", args(cluster_has_crds=False)))
    assert error.field == "opts.depends_on"
    assert "add Monitoring (ServiceMonitor and PrometheusRule CRDs) and Autoscaling" in error.allowed
    assert recording.resources == []

    def with_monitoring_only() -> None:
        k8s_provider = k8s.Provider("k8s", kubeconfig="{}")
        monitoring = Monitoring("monitoring", MonitoringArgs(), pulumi.ResourceOptions(provider=k8s_provider))
        TritonModelService(
            "ranker",
            args(cluster_has_crds=False),
            pulumi.ResourceOptions(provider=k8s_provider, depends_on=[monitoring]),
        )

    _, error = run_invalid(with_monitoring_only)
    assert (
        error.value == ["Monitoring"] and "Monitoring" not in error.allowed.split("add ")[1].split(" to")[0]
    )


def test_the_fill_is_told_the_versions_the_deploy_ships() -> None:
    """With the models shipped by the deploy, a pod of a new release waits for the manifest that
    serves its versions, not the previous release's."""
    shipped = args()
    shipped.source = dataclasses.replace(
        shipped.source, served=ServedModels({"ranker": (2, 3), "ranker-v2": (1,)}, 1 << 20)
    )
    assert fill_models(shipped) == "ranker:2+3,ranker-v2:1"
    assert fill_models(args()) == "ranker,ranker-v2"  # published out of band: whatever is there


def test_front_trigger_is_optional_and_reads_the_fronts_time() -> None:
    triggers = {
        t["name"]: t for t in scaled_object("ranker", args(front_time_target_ms=20))["spec"]["triggers"]
    }
    assert triggers["front-time"]["metadata"]["query"] == promql.front_time_per_request_ms(
        namespace="ranker", pod_regex=promql.deployment_pod_regex(service="ranker")
    )
    assert (triggers["front-time"]["metricType"], triggers["front-time"]["metadata"]["threshold"]) == (
        "Value",
        "20",
    )
    assert "front-time" not in keda_queries("ranker", args())


def test_the_front_metrics_are_scraped_through_the_service() -> None:
    front = front_container("ranker", args())
    assert {p["name"]: p["containerPort"] for p in front["ports"]} == {"http": 8000, "front-metrics": 8003}
    assert {"name": "front-metrics", "port": 8003, "targetPort": "front-metrics", "protocol": "TCP"} in (
        service("ranker", args())["spec"]["ports"]
    )
    endpoints = service_monitor("ranker", args())["spec"]["endpoints"]
    assert {"port": "front-metrics", "path": "/metrics", "interval": "15s"} in endpoints
    # The headless Service must not carry it: every pod would be scraped twice.
    assert all(p["name"] != "front-metrics" for p in headless_service("ranker", args())["spec"]["ports"])


@pytest.mark.parametrize(
    ("body_bytes", "rate", "cpu"),
    [
        (16 << 10, 100.0, 0.25),  # the defaults: the floor
        (100_000, 200.0, 0.5),  # (0.2 + 1.45) ms x 200 / 0.7 = 0.47 cores
        (1_000_000, 40.0, 0.85),  # (0.2 + 14.5) ms x 40 / 0.7 = 0.84 cores
    ],
)
def test_the_front_cpu_follows_the_expected_body_size(body_bytes: int, rate: float, cpu: float) -> None:
    sized = args(expected_request_bytes=body_bytes, expected_requests_per_second=rate, cpu=2.5)
    validate("ranker", sized)
    resources = front_container("ranker", sized)["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == f"{cpu:g}"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"expected_request_bytes": 0}, "expected_request_bytes"),
        ({"expected_request_bytes": (65 << 20) + 1}, "expected_request_bytes"),
        # 1 MB JSON bodies at 100 req/s need 2.1 cores; one nginx worker has one.
        ({"expected_request_bytes": 1_000_000}, "expected_request_bytes"),
        ({"expected_requests_per_second": 0.0}, "expected_requests_per_second"),
        ({"expected_requests_per_second": math.inf}, "expected_requests_per_second"),
        ({"front_time_target_ms": 0.0}, "front_time_target_ms"),
    ],
)
def test_front_sizing_inputs_are_checked(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate("ranker", args(**overrides))
    assert caught.value.field == field


def test_a_bigger_front_leaves_triton_less_cpu() -> None:
    """g5.xlarge: 4 vCPUs less 0.5 for the node less the front."""
    validate("ranker", args(cpu=3.25))
    with pytest.raises(InvalidInput) as caught:
        validate(
            "ranker", args(cpu=3.25, expected_request_bytes=1_000_000, expected_requests_per_second=40.0)
        )
    assert caught.value.field == "cpu" and "2.65" in caught.value.allowed
