"""Telemetry: the collector, Jaeger and Fluent Bit configs as pure functions, the three pinned releases
rendered by the real helm with exactly the values the component passes (and checked where it matters
on a cluster: Triton's endpoint, Grafana's, the Badger volume, IRSA, every node), Fluent Bit's Triton
parser as the chart hands it to Fluent Bit run by the regex engine family Fluent Bit uses (on lines a
real Triton 2.51 wrote), and the component under mocks: least-privilege IRSA, no keys, its order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from inferstack.components import charts, telemetry
from inferstack.components.telemetry import Telemetry, TelemetryArgs
from inferstack.components.telemetry import configs as telemetry_configs
from inferstack.components.triton_telemetry import LOG_LINE, LOG_LINE_PATTERN, TRACES_PATH, onigmo_pattern
from inferstack.policies import rule_base, rules_cluster, rules_workloads
from inferstack.serving.local.triton_logs import parse_line
from tests.components.helm import find, render, render_release
from tests.conftest import ROOT, unavailable
from tests.harness import ACCOUNT_ID, REGION, Recorded, Recording, run_invalid, run_program
from tests.onigmo import Regex, library
from tests.schemas import validate_k8s
from tests.serving.test_tracing import LOG

OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"
NS = "telemetry"
RELEASE = "kubernetes:helm.sh/v3:Release"


def args(**overrides: Any) -> TelemetryArgs:
    return TelemetryArgs(
        **{"cluster_name": "ml-prod", "oidc_provider_arn": OIDC, "oidc_issuer_url": ISSUER, **overrides}
    )


def fluent_bit_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """Fluent Bit's classic format read back: ``[SECTION]`` headers, then ``key value`` lines; a key
    given several times (the parser filter's ``Parser``) reads as its values joined by ", "."""
    sections: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
        elif line.strip():
            key, value = line.split(None, 1)
            settings = sections[-1][1]
            settings[key] = f"{settings[key]}, {value}" if key in settings else value
    return sections


# --- pure configuration ---------------------------------------------------------------------------


def test_the_collector_bounds_its_memory_before_batching_and_exports_to_jaeger() -> None:
    config = telemetry.collector_config("jaeger.telemetry.svc:4317")
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["processors"] == ["memory_limiter", "batch"]  # the limiter must come first
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["otlp_grpc/jaeger"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    assert config["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "jaeger.telemetry.svc:4317"
    assert config["service"]["extensions"] == ["health_check"]


def test_jaeger_keeps_spans_for_the_retention_and_answers_its_probes() -> None:
    config = telemetry.jaeger_config(trace_retention_hours=48)
    (backend,) = config["extensions"]["jaeger_storage"]["backends"].values()
    badger = backend["badger"]
    assert badger["ttl"] == {"spans": "48h"} and badger["ephemeral"] is False
    assert all(path.startswith(f"{telemetry.BADGER_DIR}/") for path in badger["directories"].values())
    store = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] == store
    assert config["service"]["extensions"] == ["jaeger_storage", "jaeger_query", "healthcheckv2"]


def test_fluent_bit_tails_parses_and_ships_to_the_clusters_group_only() -> None:
    config = telemetry.fluent_bit_config(region="eu-west-1", log_group="/inferstack/x/c")
    text = "\n".join(config[key] for key in ("service", "inputs", "filters", "outputs"))
    sections = fluent_bit_sections(text)
    assert [kind for kind, _ in sections] == ["SERVICE", "INPUT", "FILTER", "FILTER", "FILTER", "OUTPUT"]
    settings = {kind: s for kind, s in sections if kind != "FILTER"}
    parser = next(s for kind, s in sections if kind == "FILTER" and s["Name"] == "parser")
    assert settings["INPUT"]["multiline.parser"] == "cri" and parser["Parser"] == "triton, front_access"
    assert parser["Reserve_Data"] == "On"  # the pod's metadata stays beside the parsed fields
    output = settings["OUTPUT"]
    assert output["Name"] == "cloudwatch_logs" and output["log_group_name"] == "/inferstack/x/c"
    assert output["region"] == "eu-west-1" and output["auto_create_group"] == "Off"
    (_, triton), (_, front) = fluent_bit_sections(config["customParsers"])
    assert triton["Regex"] == onigmo_pattern(LOG_LINE_PATTERN) and "(?P<" not in triton["Regex"]
    assert front == {"Name": "front_access", "Format": "json"}
    assert f"{triton['Name']}, {front['Name']}" == parser["Parser"]
    # Helm runs each section through `tpl`: a `{{` in a regex would be read as a template.
    assert not [key for key, value in config.items() if "{{" in value]


def test_the_log_role_reaches_one_group_and_its_streams() -> None:
    arn = telemetry.log_group_arn(partition="aws", region=REGION, account=ACCOUNT_ID, name="/inferstack/x/c")
    policy = telemetry.log_shipping_policy(arn)
    (statement,) = policy["Statement"]
    assert set(statement["Action"]) == {
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    }
    assert statement["Resource"] == [arn, f"{arn}:*"]
    assert rules_workloads.logs_scoped(rule_base.IAM_POLICIES[0], {"policy": json.dumps(policy)}, {}) == []


# --- the component under mocks, and its releases as helm renders them --------------------------------


def build() -> dict[str, Any]:
    provider = k8s.Provider("k8s", kubeconfig="{}")
    component = Telemetry("telemetry", args(region=REGION), pulumi.ResourceOptions(provider=provider))
    return {"collector": component.collector_url, "jaeger": component.jaeger_url}


@pytest.fixture(scope="module")
def built() -> tuple[Recording, dict[str, Any]]:
    return run_program(build)


def release_of(recording: Recording, chart: charts.Chart) -> Recorded:
    (found,) = [r for r in recording.of_type(RELEASE) if r.inputs["chart"] == chart.name]
    return found


@pytest.fixture(scope="module")
def objects(built: tuple[Recording, dict[str, Any]], vendor_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Chart name -> what helm renders for the component's release of it."""
    recording, _ = built
    return {
        chart.name: render_release(vendor_dir, release_of(recording, chart).inputs)
        for chart in (charts.OPENTELEMETRY_COLLECTOR, charts.JAEGER, charts.FLUENT_BIT)
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def test_the_component_installs_the_three_pinned_charts_under_itself(
    built: tuple[Recording, dict[str, Any]],
) -> None:
    recording, _ = built
    for chart in (charts.OPENTELEMETRY_COLLECTOR, charts.JAEGER, charts.FLUENT_BIT):
        given = release_of(recording, chart)
        assert given.parent_type == "inferstack:telemetry:Telemetry" and "k8s" in given.provider
        assert (given.inputs["version"], given.inputs["repositoryOpts"]["repo"]) == (
            chart.version,
            chart.repository,
        )
        assert given.inputs["namespace"] == NS
        assert rules_cluster.pinned_charts(RELEASE, given.inputs, {}) == []
        assert rules_cluster.pinned_images(RELEASE, given.inputs, {}) == []
    # The first-party manifests these releases replace are gone.
    for kind in ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet", "core/v1:ConfigMap"):
        assert recording.of_type(f"kubernetes:{kind}") == []
    kubernetes = [r for r in recording if r.type.startswith("kubernetes:")]
    assert [r.name for r in kubernetes if rules_workloads.no_static_aws_keys(r.type, r.inputs, {})] == []
    group = recording.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group == {**group, "name": "/inferstack/ml-prod/containers", "retentionInDays": 30}


def test_every_rendered_object_validates_and_pulls_from_the_pinned_registries(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    images = {str(image) for image in charts.IMAGES}
    pulled = set()
    for chart, rendered_objects in objects.items():
        for manifest in rendered_objects:
            validate_k8s(manifest)
            if manifest["kind"] in {"Deployment", "DaemonSet", "StatefulSet", "Pod"}:
                spec = pod_spec(manifest) if manifest["kind"] != "Pod" else manifest["spec"]
                pulled |= {c["image"] for c in [*spec.get("initContainers", []), *spec["containers"]]}
        assert [o for o in rendered_objects if o["kind"] == "Pod"] == [], f"{chart}: a test pod is rendered"
    assert pulled == images


def test_a_bad_value_renders_an_object_the_schema_refuses(vendor_dir: Path) -> None:
    values = telemetry.fluent_bit_values(region=REGION, log_group="/g", role_arn="arn")
    values["tolerations"] = [{"operator": "Maybe", "effect": 3}]
    objects = render(
        vendor_dir, charts.FLUENT_BIT, release=charts.FLUENT_BIT.name, namespace=NS, values=values
    )
    with pytest.raises(Exception, match=r"3 is not of type .string."):
        validate_k8s(find(objects, "DaemonSet"))


def service_port(objects: list[dict[str, Any]], name: str, port: int) -> dict[str, Any]:
    """The port ``port`` of Service ``name``, and that it reaches a port the selected pods declare."""
    service = find(objects, "Service", name)
    (found,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    selected = [
        o
        for o in objects
        if o["kind"] in {"Deployment", "DaemonSet"}
        and service["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
    ]
    (workload,) = selected
    (container,) = pod_spec(workload)["containers"]
    declared = {p["containerPort"] for p in container["ports"]} | {p.get("name") for p in container["ports"]}
    assert found["targetPort"] in declared, f"Service {name} port {port} reaches nothing"
    return found


def test_tritons_trace_endpoint_is_the_collectors_rendered_service(
    built: tuple[Recording, dict[str, Any]], objects: dict[str, list[dict[str, Any]]]
) -> None:
    """The URL TritonModelService's trace settings get resolves to the Service the chart renders, on
    the port the collector's OTLP/HTTP receiver listens on."""
    _, outputs = built
    url = urlsplit(outputs["collector"])
    assert url.path == TRACES_PATH and url.hostname is not None and url.port is not None
    name, namespace, svc = url.hostname.split(".")
    assert (namespace, svc) == (NS, "svc")
    collector = objects[charts.OPENTELEMETRY_COLLECTOR.name]
    service_port(collector, name, url.port)
    relay = yaml.safe_load(find(collector, "ConfigMap", name)["data"]["relay"])
    assert relay == telemetry.collector_config(telemetry.jaeger_otlp_endpoint(NS))  # nothing merged in
    assert relay["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{url.port}")
    (container,) = pod_spec(find(collector, "Deployment", name))["containers"]
    assert container["command"] == ["/otelcol-k8s"] and container["args"] == ["--config=/conf/relay.yaml"]
    # The chart probes the health check extension's port.
    health = int(relay["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
    assert (
        container["readinessProbe"]["httpGet"]["port"]
        == health
        == container["livenessProbe"]["httpGet"]["port"]
    )
    # Only the OTLP ports: the receivers the chart enables by default are not configured.
    assert {p["containerPort"] for p in container["ports"]} == {4317, 4318}


def test_the_collector_exports_to_jaegers_rendered_service(objects: dict[str, list[dict[str, Any]]]) -> None:
    collector = objects[charts.OPENTELEMETRY_COLLECTOR.name]
    relay = yaml.safe_load(find(collector, "ConfigMap")["data"]["relay"])
    host, port = relay["exporters"]["otlp_grpc/jaeger"]["endpoint"].split(":")
    name, namespace, _ = host.split(".")
    assert namespace == NS
    service_port(objects[charts.JAEGER.name], name, int(port))
    deployment = find(collector, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (spread,) = pod_spec(deployment)["topologySpreadConstraints"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()  # it spreads these very pods


def test_grafanas_jaeger_url_is_jaegers_rendered_query_port(
    built: tuple[Recording, dict[str, Any]], objects: dict[str, list[dict[str, Any]]]
) -> None:
    _, outputs = built
    url = urlsplit(outputs["jaeger"])
    assert url.hostname is not None and url.port is not None
    name, namespace, _ = url.hostname.split(".")
    assert namespace == NS
    jaeger = objects[charts.JAEGER.name]
    service_port(jaeger, name, url.port)
    config = yaml.safe_load(find(jaeger, "ConfigMap", "user-config")["data"]["user-config.yaml"])
    assert config["extensions"]["jaeger_query"]["http"]["endpoint"].endswith(f":{url.port}")


def test_jaeger_keeps_its_spans_on_a_gp3_volume_for_the_retention(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    jaeger = objects[charts.JAEGER.name]
    deployment = find(jaeger, "Deployment")
    pod = pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["image"] == str(charts.JAEGER_IMAGE)
    assert container["args"] == ["--config", "/etc/jaeger/user-config.yaml"]
    config = yaml.safe_load(find(jaeger, "ConfigMap", "user-config")["data"]["user-config.yaml"])
    assert config == telemetry.jaeger_config(trace_retention_hours=72)
    (backend,) = config["extensions"]["jaeger_storage"]["backends"].values()
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == telemetry.BADGER_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == data["name"])
    claim = find(jaeger, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert (
        claim["spec"]["storageClassName"] == "gp3"
        and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    )
    assert all(path.startswith(f"{data['mountPath']}/") for path in backend["badger"]["directories"].values())
    # One pod owns the ReadWriteOnce volume: the old pod goes before the next one mounts it.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert (
        pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsUser"]
    )  # it can write there
    # The chart's probes read the health extension's port.
    health = int(config["extensions"]["healthcheckv2"]["http"]["endpoint"].rsplit(":", 1)[1])
    assert container["readinessProbe"]["httpGet"] == {"path": "/status", "port": health, "scheme": "HTTP"}


def test_a_changed_retention_rolls_jaeger_and_a_changed_pipeline_rolls_the_others(vendor_dir: Path) -> None:
    """Each chart's pod template changes with the configuration it mounts, so the controller replaces
    the running pods instead of leaving them on the old file."""

    def template(chart: charts.Chart, values: dict[str, Any]) -> dict[str, Any]:
        objects = render(vendor_dir, chart, release=chart.name, namespace=NS, values=values)
        (workload,) = [o for o in objects if o["kind"] in {"Deployment", "DaemonSet"}]
        found: dict[str, Any] = workload["spec"]["template"]
        return found

    def jaeger(hours: int) -> dict[str, Any]:
        return telemetry.jaeger_values(
            trace_retention_hours=hours, storage_class="gp3", storage_gib=20, node_selector={}
        )

    assert template(charts.JAEGER, jaeger(72)) != template(charts.JAEGER, jaeger(48))
    assert template(charts.JAEGER, jaeger(72)) == template(charts.JAEGER, jaeger(72))
    fluent_bit = [
        telemetry.fluent_bit_values(region=REGION, log_group=group, role_arn="arn") for group in ("/a", "/b")
    ]
    assert template(charts.FLUENT_BIT, fluent_bit[0]) != template(charts.FLUENT_BIT, fluent_bit[1])
    collector = [telemetry.collector_values(ns, {}) for ns in (NS, "other")]  # the exporter's endpoint
    assert template(charts.OPENTELEMETRY_COLLECTOR, collector[0]) != template(
        charts.OPENTELEMETRY_COLLECTOR, collector[1]
    )


def test_fluent_bit_runs_on_every_node_as_the_irsa_role_and_reads_the_logs_read_only(
    built: tuple[Recording, dict[str, Any]], objects: dict[str, list[dict[str, Any]]]
) -> None:
    recording, _ = built
    fluent_bit = objects[charts.FLUENT_BIT.name]
    pod = pod_spec(find(fluent_bit, "DaemonSet"))
    assert pod["tolerations"] == [{"operator": "Exists"}]  # GPU nodes' taint included: Triton is there
    assert pod["priorityClassName"] == "system-node-critical"
    (container,) = pod["containers"]
    varlog = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/log")
    assert varlog["readOnly"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [e for e in container.get("env", []) if "AWS" in e["name"]]
    # The pods' ServiceAccount is the one the role trusts, annotated with that role.
    account = find(fluent_bit, "ServiceAccount", pod["serviceAccountName"])
    role = recording.one("aws:iam/role:Role")
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    subject = f"system:serviceaccount:{NS}:{account['metadata']['name']}"
    assert subject in trust["Condition"]["StringEquals"].values()
    assert account["metadata"]["annotations"][telemetry.IRSA_ANNOTATION].endswith(role.name)
    # The kubernetes filter reads pods and namespaces, nothing else, nothing more.
    (rule,) = find(fluent_bit, "ClusterRole")["rules"]
    assert set(rule["resources"]) == {"pods", "namespaces"} and set(rule["verbs"]) == {"get", "list", "watch"}
    binding = find(fluent_bit, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NS}
    ]


def rendered_fluent_bit_files(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The files of the rendered ConfigMap, as the DaemonSet mounts them (path -> text)."""
    pod = pod_spec(find(objects, "DaemonSet"))
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source:
            for key, text in find(objects, "ConfigMap", source["name"])["data"].items():
                files[f"{mount['mountPath']}/{key}"] = text
    return files


def test_fluent_bit_reads_the_parsers_file_and_ships_where_the_role_may_write(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    fluent_bit = objects[charts.FLUENT_BIT.name]
    files = rendered_fluent_bit_files(fluent_bit)
    (container,) = pod_spec(find(fluent_bit, "DaemonSet"))["containers"]
    config = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--config="))
    sections = fluent_bit_sections(files[config])
    service = dict(sections)["SERVICE"]
    parsers = [s["Name"] for _, s in fluent_bit_sections(files[service["Parsers_File"]])]
    parser_filter = next(s for kind, s in sections if kind == "FILTER" and s["Name"] == "parser")
    assert ", ".join(parsers) == parser_filter["Parser"]
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert int(service["HTTP_Port"]) == http["containerPort"]  # what the probes and the Service reach
    output = dict(sections)["OUTPUT"]
    assert output["log_group_name"] == "/inferstack/ml-prod/containers" and output["region"] == REGION
    # The tail database is on the node, in a mount the container may write.
    state = next(
        m for m in container["volumeMounts"] if dict(sections)["INPUT"]["DB"].startswith(m["mountPath"])
    )
    assert not state.get("readOnly")


def test_fluent_bit_throttles_what_it_ships_after_parsing(objects: dict[str, list[dict[str, Any]]]) -> None:
    """The chart's rendered config ends its filters with the throttle (issue 27 item 6): a service at
    --log-verbose=1 or a crash loop is capped at FLUENT_BIT_RECORDS_PER_S per node before CloudWatch."""
    fluent_bit = objects[charts.FLUENT_BIT.name]
    files = rendered_fluent_bit_files(fluent_bit)
    (container,) = pod_spec(find(fluent_bit, "DaemonSet"))["containers"]
    config = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--config="))
    filters = [s for kind, s in fluent_bit_sections(files[config]) if kind == "FILTER"]
    assert [f["Name"] for f in filters] == ["kubernetes", "parser", "throttle"]
    throttle = filters[-1]
    assert throttle["Match"] == dict(fluent_bit_sections(files[config]))["OUTPUT"]["Match"]
    assert (
        int(throttle["Rate"]) == telemetry_configs.FLUENT_BIT_RECORDS_PER_S and int(throttle["Window"]) == 60
    )


def test_the_releases_wait_for_what_their_pods_need(built: tuple[Recording, dict[str, Any]]) -> None:
    recording, _ = built
    by_type = {r.type: r.urn for r in recording if r.type != RELEASE}
    namespace = by_type["kubernetes:core/v1:Namespace"]
    fluent_bit = release_of(recording, charts.FLUENT_BIT)
    # Its pods ship from their first line: the group exists (the role may not create it) and the role
    # may write to it.
    for needed in ("aws:cloudwatch/logGroup:LogGroup", "aws:iam/rolePolicy:RolePolicy", "aws:iam/role:Role"):
        assert by_type[needed] in fluent_bit.dependencies, needed
    assert by_type["aws:iam/role:Role"] in fluent_bit.property_dependencies["values"]
    jaeger = release_of(recording, charts.JAEGER)
    collector = release_of(recording, charts.OPENTELEMETRY_COLLECTOR)
    assert {namespace, jaeger.urn} <= set(collector.dependencies)
    assert namespace in jaeger.dependencies and namespace in fluent_bit.dependencies


# --- Fluent Bit's parser, as the chart gives it, on Triton's real lines ----------------------------------


def triton_parser(vendor_dir: Path) -> Regex:
    """The regex of the parsers file the chart mounts for Fluent Bit, compiled as Fluent Bit compiles it."""
    if library() is None:
        unavailable("libonig (Oniguruma) not found: it runs Fluent Bit's regex as Fluent Bit would")
    values = telemetry.fluent_bit_values(region=REGION, log_group="/inferstack/x/c", role_arn="arn")
    objects = render(
        vendor_dir, charts.FLUENT_BIT, release=charts.FLUENT_BIT.name, namespace=NS, values=values
    )
    files = rendered_fluent_bit_files(objects)
    (config,) = [text for path, text in files.items() if path.endswith("/fluent-bit.conf")]
    parsers_file = dict(fluent_bit_sections(config))["SERVICE"]["Parsers_File"]
    (_, triton), _front = fluent_bit_sections(files[parsers_file])
    return Regex(triton["Regex"], list(LOG_LINE.groupindex))


@pytest.fixture(scope="module")
def fluent_bit_parser(vendor_dir: Path) -> Regex:
    return triton_parser(vendor_dir)


def fluent_bit_fields_agree(parser: Regex, lines: list[str]) -> int:
    """Fluent Bit's fields for each line equal the local parser's record; returns how many matched."""
    matched = 0
    for line in lines:
        fields, record = parser.match(line.rstrip("\n")), parse_line(line)
        assert (fields is None) == (record is None), line
        if fields is None or record is None:
            continue
        matched += 1
        assert fields.get("request_id") == record.request_id, line
        assert fields["time"] == record.time and int(fields["thread"]) == record.thread
        assert fields["source"] == record.source and fields["message"].replace("\\n", "\n") == record.message
    return matched


def test_fluent_bits_parser_reads_triton_lines_as_the_local_parser_does(fluent_bit_parser: Regex) -> None:
    assert fluent_bit_fields_agree(fluent_bit_parser, LOG) == 4  # the table row is not a log entry
    assert fluent_bit_parser.match(LOG[0].rstrip("\n")) == {
        "time": "2026-11-23T16:54:26Z",
        "level": "I",
        "thread": "30519",
        "source": "infer_request.cc:132",
        "request_id": "req-42",
        "message": "Setting state from INITIALIZED to PENDING",
    }


def test_the_request_fronts_line_falls_through_tritons_parser_to_the_json_one(
    fluent_bit_parser: Regex,
) -> None:
    """The filter tries Triton's regex first: the front's line (as the real nginx writes it, see
    tests/serving/test_request_front.py) must not match it, and reads whole as JSON."""
    line = (
        '{"time":"2026-12-05T00:52:25+00:00","request_id":"req-json-7","model":"demo","status":200,'
        '"request_bytes":391,"response_bytes":365,"seconds":0.002,"triton_seconds":"0.001","traceparent":""}'
    )
    assert fluent_bit_parser.match(line) is None
    assert json.loads(line)["request_id"] == "req-json-7"


def test_python_spelling_of_the_pattern_would_not_load_in_fluent_bit(fluent_bit_parser: Regex) -> None:
    with pytest.raises(ValueError, match="undefined group option"):
        Regex(LOG_LINE_PATTERN, list(LOG_LINE.groupindex))


# --- bad input ---------------------------------------------------------------------------------------


# (the field, a value it refuses)
BAD_ARGS: list[tuple[str, object]] = [
    ("log_retention_days", 10),
    ("trace_retention_hours", 0),
    ("trace_storage_gib", True),
    ("namespace", "Telemetry"),
    ("cluster_name", "ml prod"),
    ("cluster_name", "x" * 500),
]


@pytest.mark.parametrize(("field", "value"), BAD_ARGS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_ARGS])
def test_bad_input_is_refused_before_anything_is_registered(field: str, value: object) -> None:
    recording, error = run_invalid(lambda: Telemetry("telemetry", args(region=REGION, **{field: value})))
    assert error.field == field and recording.resources == []


def test_a_name_too_long_for_the_role_is_refused() -> None:
    recording, error = run_invalid(lambda: Telemetry("t" * 50, args(region=REGION)))
    assert error.field == "name" and "64" in error.allowed and recording.resources == []


def test_the_docs_name_the_pinned_chart_versions() -> None:
    page = (ROOT / "docs" / "operations" / "traces-and-logs.md").read_text()
    for chart in (charts.OPENTELEMETRY_COLLECTOR, charts.JAEGER, charts.FLUENT_BIT):
        assert f"`{chart.name}` {chart.version}" in page, chart.name
