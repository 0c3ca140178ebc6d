"""Every Helm release of every stack, rendered by the real helm from the vendored chart sources with
exactly the values the stack passes (the Release inputs the engine receives), and every rendered
object validated: built-in kinds against Kubernetes' schemas, custom resources against their CRDs.

Then what the charts render is checked where it matters on a cluster (the scrape that keeps the GPU
pods' labels, the storage Prometheus claims, the autoscaler's priorities and flags), and the plan's
dependencies are walked: no custom resource may race the release that installs its CRD.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.components.autoscaling import BALANCING_IGNORED_LABELS, Autoscaling, AutoscalingArgs
from inferstack.components.charts import CHARTS, KUBE_PROMETHEUS_STACK
from inferstack.components.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.infra.storage import EBS_CSI_ADDON, EBS_CSI_PROVISIONER
from inferstack.stacks import offline
from tests.components.helm import HelmLoader, chart_of, chart_source, find, render, render_release
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recorded, Recording, run_program
from tests.schemas import crd_schemas, validate_custom_resource, validate_k8s

RELEASE = "kubernetes:helm.sh/v3:Release"
CRD = "CustomResourceDefinition"
STACKS = ("dev", "staging", "prod")
_TAG = re.compile(r"^[^:@]+(:[^:@/]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Rendered:
    """One program's recorded resources, and what helm renders for each of its releases."""

    recording: Recording
    objects: dict[str, list[dict[str, Any]]]  # release URN -> rendered objects

    def release(self, chart: str) -> Recorded:
        return next(r for r in self.recording.of_type(RELEASE) if r.inputs["chart"] == chart)

    def of(self, chart: str) -> list[dict[str, Any]]:
        return self.objects[self.release(chart).urn]

    def crds(self) -> list[dict[str, Any]]:
        return [o for objects in self.objects.values() for o in objects if o["kind"] == CRD]


def vendored_api_versions(vendor_dir: Path) -> tuple[str, ...]:
    """The custom API groups the cluster serves once the CRD-installing releases are in (see ordering)."""
    found = set()
    for path in (vendor_dir / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            found |= {f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"]}
    return tuple(sorted(found))


def render_all(recording: Recording, vendor_dir: Path) -> Rendered:
    api_versions = vendored_api_versions(vendor_dir)
    objects = {}
    for release in recording.of_type(RELEASE):
        objects[release.urn] = render_release(vendor_dir, release.inputs, api_versions) + pulumi_applied_crds(
            vendor_dir, release.inputs
        )
    return Rendered(recording, objects)


def pulumi_applied_crds(vendor_dir: Path, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The CRDs of a chart that Pulumi applies (``Chart.crd_files``, a ConfigGroup the release waits for):
    the same files, from the vendored source of the same version. They count as the release's own."""
    chart = chart_of(inputs["chart"], inputs["version"])
    folder = chart_source(vendor_dir, chart) / "charts" / "crds" / "crds"
    return [yaml.load((folder / name).read_text(), Loader=HelmLoader) for name in chart.crd_files]


def render_monitoring(vendor_dir: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """kube-prometheus-stack rendered with ``values``, as the Monitoring component installs it."""
    return render(
        vendor_dir,
        KUBE_PROMETHEUS_STACK,
        release="kube-prometheus-stack",
        namespace="monitoring",
        values=values,
        api_versions=vendored_api_versions(vendor_dir),
    )


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest, vendor_dir: Path) -> Rendered:
    return render_all(offline.run_stack(ROOT / "stacks", request.param, DEPLOYER), vendor_dir)


def images(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(node, list):
        for value in node:
            yield from images(value)


# --- every release renders, every object validates ------------------------------------------------------


def test_every_release_renders_and_every_object_validates(stack: Rendered, vendor_dir: Path) -> None:
    assert {r.inputs["chart"] for r in stack.recording.of_type(RELEASE)} == {c.name for c in CHARTS}
    schemas = crd_schemas(stack.crds())
    checked = 0
    for release in stack.recording.of_type(RELEASE):
        for manifest in stack.objects[release.urn]:
            where = f"{release.inputs['chart']}: {manifest['kind']} {manifest['metadata']['name']}"
            try:
                if (manifest["apiVersion"], manifest["kind"]) in schemas:
                    validate_custom_resource(manifest, vendor_dir, schemas)
                else:
                    validate_k8s(manifest)
            except Exception as error:
                raise AssertionError(f"{where} does not validate: {error}") from None
            for image in images(manifest):
                assert _TAG.match(image) and not image.endswith(":latest"), f"{where}: image {image}"
            checked += 1
    assert checked > 150  # kube-prometheus-stack alone renders well over a hundred objects


def test_a_bad_value_fails_the_render_or_the_validation(vendor_dir: Path) -> None:
    recording, _ = run_program(lambda: Monitoring("monitoring", MonitoringArgs()))
    values = recording.one(RELEASE).inputs["values"]
    values["prometheus"]["prometheusSpec"]["retention"] = 15  # a number where the CRD wants a duration
    objects = render_monitoring(vendor_dir, values)
    prometheus = find(objects, "Prometheus")
    with pytest.raises(Exception, match="15"):
        validate_custom_resource(prometheus, vendor_dir, crd_schemas(o for o in objects if o["kind"] == CRD))


# --- what the charts render, where it matters -----------------------------------------------------------


def test_dcgm_scrape_keeps_the_labels_of_the_pods_that_hold_the_gpus(stack: Rendered) -> None:
    objects = stack.of("dcgm-exporter")
    (endpoint,) = find(objects, "ServiceMonitor")["spec"]["endpoints"]
    # The exporter's own pod/namespace/container labels name the pod holding each GPU; the target's
    # (the exporter pod's) are dropped before the scrape, so they neither win nor fill the gaps.
    assert endpoint["honorLabels"] is True
    (drop,) = [r for r in endpoint["relabelings"] if r["action"] == "labeldrop"]
    for label in ("namespace", "pod", "container"):
        assert re.fullmatch(drop["regex"], label)
    for label in ("Hostname", "gpu", "job", "instance"):
        assert not re.fullmatch(drop["regex"], label)
    (container,) = find(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"} in container["env"]
    assert "/var/lib/kubelet/pod-resources" in {m["mountPath"] for m in container["volumeMounts"]}


def claimed_classes(objects: list[dict[str, Any]]) -> list[str | None]:
    """The storage class of every claim the objects make (PVCs, claim templates, operator storage specs)."""
    claims: list[dict[str, Any]] = []
    for manifest in objects:
        spec = manifest.get("spec") or {}
        if manifest["kind"] == "PersistentVolumeClaim":
            claims.append(spec)
        claims += [t["spec"] for t in spec.get("volumeClaimTemplates", [])]
        template = (spec.get("storage") or {}).get("volumeClaimTemplate")
        if template:
            claims.append(template["spec"])
    return [claim.get("storageClassName") for claim in claims]


def test_every_claim_names_a_class_the_stack_creates_on_an_installed_driver(stack: Rendered) -> None:
    classes = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in stack.recording.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    }
    claims = [c for objects in stack.objects.values() for c in claimed_classes(objects)]
    assert claims, "Prometheus claims a volume"
    assert claimed_classes(stack.of("jaeger")) == ["gp3"], "Jaeger's Badger volume"
    prometheus = find(stack.of("kube-prometheus-stack"), "Prometheus")
    assert prometheus["spec"]["storage"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "gp3"
    for claim in claims:
        assert claim in classes, f"a claim names storage class {claim!r}; the stack creates {sorted(classes)}"
    gp3 = classes["gp3"]
    validate_k8s({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", **gp3})
    assert gp3["provisioner"] == EBS_CSI_PROVISIONER
    assert gp3["parameters"]["encrypted"] == "true" and gp3["parameters"]["type"] == "gp3"
    assert gp3["volumeBindingMode"] == "WaitForFirstConsumer"  # an EBS volume lives in one zone
    addon = next(
        r for r in stack.recording.of_type("aws:eks/addon:Addon") if r.inputs["addonName"] == EBS_CSI_ADDON
    )
    assert addon.inputs["serviceAccountRoleArn"]
    # A release that claims a volume waits for its class and the driver (its pods wait for the volume,
    # and the release for its pods).
    gp3_urn = next(
        r.urn
        for r in stack.recording.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
        if r.inputs["metadata"]["name"] == "gp3"
    )
    for release in stack.recording.of_type(RELEASE):
        if claimed_classes(stack.objects[release.urn]):
            assert {gp3_urn, addon.urn} <= waits_for(stack.recording, release.urn), release.name


def test_grafana_is_given_the_trace_store_as_a_data_source(stack: Rendered) -> None:
    """kube-prometheus-stack renders our additionalDataSources into Grafana's provisioning file, and
    the URL there is the Service the Jaeger release renders, in its namespace, on its query port."""
    files = [
        yaml.safe_load(text)
        for manifest in stack.of("kube-prometheus-stack")
        if manifest["kind"] == "ConfigMap"
        for key, text in (manifest.get("data") or {}).items()
        if key.endswith(".yaml") and "datasources" in text
    ]
    sources = [s for f in files for s in f.get("datasources") or []]
    (jaeger,) = [s for s in sources if s["type"] == "jaeger"]
    host, port = jaeger["url"].removeprefix("http://").split(":")
    name, namespace = host.split(".")[:2]
    assert stack.release("jaeger").inputs["namespace"] == namespace
    service = find(stack.of("jaeger"), "Service", name)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert jaeger["access"] == "proxy" and {s["type"] for s in sources} >= {"prometheus", "jaeger"}


def test_tritons_spans_go_to_the_collector_service_the_chart_renders(stack: Rendered) -> None:
    """Every Triton's trace URL names the Service the collector release renders, in the release's
    namespace, on a port that reaches the collector's OTLP/HTTP receiver."""
    collector = stack.of("opentelemetry-collector")
    relay = yaml.safe_load(find(collector, "ConfigMap")["data"]["relay"])
    receiver_port = int(relay["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1])
    (pod,) = [o for o in collector if o["kind"] == "Deployment"]
    (container,) = pod["spec"]["template"]["spec"]["containers"]
    tritons = [
        c
        for d in stack.recording.of_type("kubernetes:apps/v1:Deployment")
        for c in d.inputs["spec"]["template"]["spec"]["containers"]
        if c["name"] == "triton"
    ]
    assert tritons
    for triton in tritons:
        (url,) = [
            a.removeprefix("opentelemetry,url=") for a in triton["args"] if a.startswith("opentelemetry,url=")
        ]
        host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
        name, namespace, _ = host.split(".")
        assert namespace == stack.release("opentelemetry-collector").inputs["namespace"]
        (service_port,) = [
            p for p in find(collector, "Service", name)["spec"]["ports"] if p["port"] == int(port)
        ]
        (target,) = [
            p for p in container["ports"] if service_port["targetPort"] in (p["name"], p["containerPort"])
        ]
        assert target["containerPort"] == receiver_port


def test_autoscaler_prefers_spot_and_balances_groups_that_differ_only_per_group(stack: Rendered) -> None:
    objects = stack.of("cluster-autoscaler")
    priorities = yaml.safe_load(find(objects, "ConfigMap")["data"]["priorities"])
    first, second = sorted(priorities, reverse=True)[:2]
    assert (priorities[first], priorities[second]) == ([".*gpu-reserved-.*"], [".*gpu-spot.*"])
    assert priorities[min(priorities)] == [".*"]
    (container,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    flags = set(container["command"])
    assert {
        "--expander=priority",
        "--balance-similar-node-groups=true",
        "--emit-per-nodegroup-metrics=true",
    } <= flags
    for label in (
        "eks.amazonaws.com/sourceLaunchTemplateId",
        "eks.amazonaws.com/sourceLaunchTemplateVersion",
        "eks.amazonaws.com/nodegroup-image",
    ):
        assert label in BALANCING_IGNORED_LABELS and f"--balancing-ignore-label={label}" in flags
    # Its metrics (the spot alert reads the per-group backoff) are scraped from its own namespace.
    monitor = find(objects, "ServiceMonitor")
    release = stack.release("cluster-autoscaler").inputs
    assert monitor["metadata"]["namespace"] == release["namespace"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [release["namespace"]]}


# --- ordering: no custom resource races the release that installs its CRD ------------------------------


def crd_sources(rendered: Rendered) -> dict[tuple[str, str], str]:
    """(API group, kind) -> URN of the release whose chart installs that CRD."""
    return {
        (o["spec"]["group"], o["spec"]["names"]["kind"]): urn
        for urn, objects in rendered.objects.items()
        for o in objects
        if o["kind"] == CRD
    }


def waits_for(recording: Recording, urn: str) -> set[str]:
    """Every resource the engine orders ``urn`` after: its dependencies, transitively."""
    by_urn = {r.urn: r for r in recording}
    seen: set[str] = set()
    todo = list(by_urn[urn].dependencies)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += by_urn[current].dependencies if current in by_urn else ()
    return seen


def crd_races(rendered: Rendered) -> list[str]:
    """Custom resources (registered directly, or rendered by another release) not ordered after their CRD."""
    sources = crd_sources(rendered)
    races = []
    for resource in rendered.recording:
        if resource.type == RELEASE:
            kinds = {(o["apiVersion"].split("/")[0], o["kind"]) for o in rendered.objects[resource.urn]}
        elif resource.custom and resource.type.startswith("kubernetes:"):
            _, api_version, kind = resource.type.split(":")
            kinds = {(api_version.rsplit("/", 1)[0], kind)}
        else:
            continue
        for kind in sorted(kinds):
            source = sources.get(kind)
            if (
                source is not None
                and source != resource.urn
                and source not in waits_for(rendered.recording, resource.urn)
            ):
                races.append(f"{resource.name} ({kind[1]}) can race {source.split('::')[-1]}")
    return races


def test_no_custom_resource_races_its_crd(stack: Rendered) -> None:
    sources = crd_sources(stack)
    assert {("monitoring.coreos.com", "ServiceMonitor"), ("keda.sh", "ScaledObject")} <= set(sources)
    assert crd_races(stack) == []


def test_a_service_without_its_dependencies_is_caught_racing(vendor_dir: Path) -> None:
    """The check itself: a model service that waits for nothing races both CRDs it needs."""

    def program() -> None:
        Monitoring("monitoring", MonitoringArgs())
        Autoscaling(
            "autoscaling",
            AutoscalingArgs(
                cluster_name="c",
                region="us-east-1",
                oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/x",
                oidc_issuer_url="https://x",
            ),
        )
        source = ModelSource(role_arn="arn:aws:iam::123456789012:role/r", repository_uri="s3://b/p")
        TritonModelService(
            "ranker", TritonModelServiceArgs(models=["ranker"], source=source, zones=3, cluster_has_crds=True)
        )

    recording, _ = run_program(program)
    races = crd_races(render_all(recording, vendor_dir))
    for kind in ("ServiceMonitor", "ScaledObject", "PrometheusRule"):
        assert any(f"({kind})" in race for race in races), races
    # The autoscaler's chart renders a ServiceMonitor too: its release must wait for Prometheus's CRDs.
    assert any("cluster-autoscaler (ServiceMonitor)" in race for race in races), races


# --- ordering: a release's pods start after what they need -----------------------------------------------

WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


def pod_needs(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of the objects a pod cannot start without: the API server refuses a pod whose
    ServiceAccount is missing, and the kubelet does not start one whose volume's source is missing."""
    needs = set()
    account = pod.get("serviceAccountName")
    if account and account != "default":  # every namespace has its default account
        needs.add(("ServiceAccount", account))
    for volume in pod.get("volumes", []):
        for key, kind, name in (
            ("configMap", "ConfigMap", "name"),
            ("secret", "Secret", "secretName"),
            ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName"),
        ):
            source = volume.get(key)
            if source and not source.get("optional"):
                needs.add((kind, source[name]))
    return needs


def startup_races(objects: list[dict[str, Any]]) -> list[str]:
    """What a release's workloads need that the release does not create before them.

    ``helm template`` prints a release in the order ``helm install`` creates it (kind by kind, each
    kind's creations finished before the next kind's start), so what a workload needs must come
    earlier in that list, and be of another kind.
    """
    races = []
    for index, workload in enumerate(objects):
        if workload["kind"] not in WORKLOADS:
            continue
        earlier = {
            (o["kind"], o["metadata"]["name"]) for o in objects[:index] if o["kind"] != workload["kind"]
        }
        for kind, name in sorted(pod_needs(workload["spec"]["template"]["spec"]) - earlier):
            races.append(f"{workload['kind']} {workload['metadata']['name']} needs {kind} {name}")
    return races


# Secrets that exist before the pods that mount them start, without the release rendering them: the
# kubelet retries the mount until they do.
CREATED_AT_RUNTIME = {
    # KEDA's operator generates its own certificates into this Secret.
    ("keda", "Deployment keda-operator-metrics-apiserver needs Secret kedaorg-certs"),
    ("keda", "Deployment keda-admission-webhooks needs Secret kedaorg-certs"),
    # The chart's pre-install hook Job creates the webhook's certificate before the release's objects.
    (
        "kube-prometheus-stack",
        "Deployment kube-prometheus-stack-operator needs Secret kube-prometheus-stack-admission",
    ),
}


def test_every_releases_pods_start_after_their_service_account_and_volumes(stack: Rendered) -> None:
    for chart in ("opentelemetry-collector", "jaeger", "fluent-bit"):
        assert [o for o in stack.of(chart) if o["kind"] in WORKLOADS], chart
    races = {(c.name, race) for c in CHARTS for race in startup_races(stack.of(c.name))}
    assert races - CREATED_AT_RUNTIME == set()


def test_a_workload_created_before_its_service_account_is_caught(stack: Rendered) -> None:
    """The check itself: Fluent Bit's DaemonSet moved before its ServiceAccount, or its ConfigMap dropped."""
    objects = stack.of("fluent-bit")
    (daemon_set,) = [o for o in objects if o["kind"] == "DaemonSet"]
    assert startup_races([daemon_set, *[o for o in objects if o is not daemon_set]]) == [
        "DaemonSet fluent-bit needs ConfigMap fluent-bit",
        "DaemonSet fluent-bit needs ServiceAccount fluent-bit",
    ]
    assert startup_races([o for o in objects if o["kind"] != "ConfigMap"]) == [
        "DaemonSet fluent-bit needs ConfigMap fluent-bit"
    ]
