"""Telemetry: the collector, Jaeger and Fluent Bit configs as pure functions, their manifests against the
Kubernetes schemas, Fluent Bit's Triton parser run by the regex engine family Fluent Bit uses (on
lines a real Triton 2.51 wrote), and the component under mocks: least-privilege IRSA, no keys."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from inferstack.components import telemetry
from inferstack.components.telemetry import Telemetry, TelemetryArgs
from inferstack.components.triton_telemetry import LOG_LINE, LOG_LINE_PATTERN, onigmo_pattern
from inferstack.policies import rules
from inferstack.serving.local.triton_logs import parse_line
from tests.conftest import unavailable
from tests.harness import ACCOUNT_ID, REGION, Recording, run_invalid, run_program
from tests.onigmo import Regex, library
from tests.schemas import validate_k8s
from tests.serving.test_tracing import LOG

OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"
NS = "telemetry"


def args(**overrides: Any) -> TelemetryArgs:
    return TelemetryArgs(
        **{"cluster_name": "ml-prod", "oidc_provider_arn": OIDC, "oidc_issuer_url": ISSUER, **overrides}
    )


def fluent_bit_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """Fluent Bit's classic format read back: ``[SECTION]`` headers, then ``key value`` lines."""
    sections: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
        elif line.strip():
            key, value = line.split(None, 1)
            sections[-1][1][key] = value
    return sections


# --- pure configuration ---------------------------------------------------------------------------


def test_the_collector_bounds_its_memory_before_batching_and_exports_to_jaeger() -> None:
    config = telemetry.collector_config("jaeger.telemetry.svc:4317")
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["processors"] == ["memory_limiter", "batch"]  # the limiter must come first
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["otlp/jaeger"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317" and protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger.telemetry.svc:4317"
    # The collector's own ConfigMap points at the Jaeger Service the component creates.
    text = telemetry.collector_config_map(NS)["data"]["collector.yaml"]
    service = telemetry.service(telemetry.JAEGER, NS, [("otlp-grpc", 4317)])
    host = f"{service['metadata']['name']}.{NS}.svc:{service['spec']['ports'][0]['port']}"
    assert yaml.safe_load(text)["exporters"]["otlp/jaeger"]["endpoint"] == host


def test_jaeger_keeps_spans_on_its_volume_for_the_retention() -> None:
    config = telemetry.jaeger_config(trace_retention_hours=48)
    (backend,) = config["extensions"]["jaeger_storage"]["backends"].values()
    badger = backend["badger"]
    assert badger["ttl"] == {"spans": "48h"} and badger["ephemeral"] is False
    stateful = telemetry.jaeger_stateful_set(NS, storage_class="gp3", storage_gib=20, node_selector={})
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")["mountPath"]
    assert all(path.startswith(f"{data}/") for path in badger["directories"].values())
    store = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] == store
    assert config["service"]["extensions"] == ["jaeger_storage", "jaeger_query"]


def test_fluent_bit_tails_parses_and_ships_to_the_clusters_group_only() -> None:
    sections = fluent_bit_sections(
        telemetry.fluent_bit_config(region="eu-west-1", log_group="/inferstack/x/c")
    )
    kinds = [kind for kind, _ in sections]
    assert kinds == ["SERVICE", "INPUT", "FILTER", "FILTER", "OUTPUT"]
    settings = {kind: s for kind, s in sections if kind != "FILTER"}
    parser = next(s for kind, s in sections if kind == "FILTER" and s["Name"] == "parser")
    assert settings["INPUT"]["multiline.parser"] == "cri" and parser["Parser"] == "triton"
    assert parser["Reserve_Data"] == "On"  # the pod's metadata stays beside the parsed fields
    output = settings["OUTPUT"]
    assert output["Name"] == "cloudwatch_logs" and output["log_group_name"] == "/inferstack/x/c"
    assert output["region"] == "eu-west-1" and output["auto_create_group"] == "Off"
    (parsers,) = fluent_bit_sections(telemetry.fluent_bit_parsers())
    assert parsers[1]["Regex"] == onigmo_pattern(LOG_LINE_PATTERN) and "(?P<" not in parsers[1]["Regex"]
    assert parsers[1]["Name"] == parser["Parser"]


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
    assert rules.logs_scoped(rules.IAM_POLICIES[0], {"policy": json.dumps(policy)}, {}) == []


# --- Fluent Bit's parser on Triton's real lines ------------------------------------------------------


def triton_parser() -> Regex:
    """The regex of the parsers file Fluent Bit is given, compiled as Fluent Bit compiles it."""
    if library() is None:
        unavailable("libonig (Oniguruma) not found: it runs Fluent Bit's regex as Fluent Bit would")
    (parsers,) = fluent_bit_sections(telemetry.fluent_bit_parsers())
    return Regex(parsers[1]["Regex"], list(LOG_LINE.groupindex))


@pytest.fixture(scope="module")
def fluent_bit_parser() -> Regex:
    return triton_parser()


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


def test_python_spelling_of_the_pattern_would_not_load_in_fluent_bit(fluent_bit_parser: Regex) -> None:
    with pytest.raises(ValueError, match="undefined group option"):
        Regex(LOG_LINE_PATTERN, list(LOG_LINE.groupindex))


# --- manifests ----------------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    return [
        telemetry.collector_config_map(NS),
        telemetry.collector_deployment(NS, {"inferstack.io/node-role": "system"}),
        telemetry.jaeger_config_map(NS, trace_retention_hours=72),
        telemetry.jaeger_stateful_set(NS, storage_class="gp3", storage_gib=20, node_selector={}),
        telemetry.service(telemetry.JAEGER, NS, [("otlp-grpc", 4317), ("query", 16686)]),
        telemetry.fluent_bit_config_map(NS, region=REGION, log_group="/inferstack/x/c"),
        telemetry.fluent_bit_service_account(NS, "arn:aws:iam::123456789012:role/fluent-bit"),
        telemetry.fluent_bit_cluster_role(),
        telemetry.fluent_bit_cluster_role_binding(NS),
        telemetry.fluent_bit_daemon_set(NS),
    ]


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: f"{m['kind']}-{m['metadata']['name']}")
def test_every_manifest_validates(manifest: dict[str, Any]) -> None:
    validate_k8s(manifest)


def test_fluent_bit_runs_on_every_node_and_reads_the_logs_read_only() -> None:
    pod = telemetry.fluent_bit_daemon_set(NS)["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]  # GPU nodes' taint included: Triton is there
    (container,) = pod["containers"]
    varlog = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/log")
    assert varlog["readOnly"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [e for e in container.get("env", []) if "AWS" in e["name"]]


def test_a_bad_manifest_is_caught_by_the_schema() -> None:
    broken = telemetry.fluent_bit_daemon_set(NS)
    broken["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Maybe", "effect": 3}]
    with pytest.raises(Exception, match=r"3 is not of type .string."):
        validate_k8s(broken)


# --- the component under mocks --------------------------------------------------------------------


def build() -> dict[str, Any]:
    provider = k8s.Provider("k8s", kubeconfig="{}")
    component = Telemetry("telemetry", args(region=REGION), pulumi.ResourceOptions(provider=provider))
    return {"collector": component.collector_url, "jaeger": component.jaeger_url}


@pytest.fixture(scope="module")
def built() -> tuple[Recording, dict[str, Any]]:
    return run_program(build)


def test_the_component_registers_the_pipeline_under_itself(built: tuple[Recording, dict[str, Any]]) -> None:
    recording, outputs = built
    assert outputs == {
        "collector": "http://otel-collector.telemetry.svc:4318/v1/traces",
        "jaeger": "http://jaeger.telemetry.svc:16686",
    }
    for kind in ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet"):
        (workload,) = recording.of_type(f"kubernetes:{kind}")
        assert workload.parent_type == "inferstack:telemetry:Telemetry"
        assert "k8s" in workload.provider
        (container,) = workload.inputs["spec"]["template"]["spec"]["containers"]
        assert rules.pinned_images(workload.type, workload.inputs, {}) == [], container["image"]
    group = recording.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group == {**group, "name": "/inferstack/ml-prod/containers", "retentionInDays": 30}
    kubernetes = [r for r in recording if r.type.startswith("kubernetes:")]
    assert [r.name for r in kubernetes if rules.no_static_aws_keys(r.type, r.inputs, {})] == []


def test_only_fluent_bits_service_account_assumes_the_log_role(
    built: tuple[Recording, dict[str, Any]],
) -> None:
    recording, _ = built
    role = recording.one("aws:iam/role:Role").inputs
    (trust,) = json.loads(role["assumeRolePolicy"])["Statement"]
    conditions = trust["Condition"]["StringEquals"]
    assert "system:serviceaccount:telemetry:fluent-bit" in conditions.values()
    policy = json.loads(recording.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    (statement,) = policy["Statement"]
    group = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/inferstack/ml-prod/containers"
    assert statement["Resource"] == [group, f"{group}:*"]
    account = recording.one("kubernetes:core/v1:ServiceAccount").inputs["metadata"]
    assert account["name"] == "fluent-bit" and account["annotations"]["eks.amazonaws.com/role-arn"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"log_retention_days": 10}, "log_retention_days"),
        ({"trace_retention_hours": 0}, "trace_retention_hours"),
        ({"trace_storage_gib": True}, "trace_storage_gib"),
        ({"namespace": "Telemetry"}, "namespace"),
        ({"cluster_name": "ml prod"}, "cluster_name"),
        ({"cluster_name": "x" * 500}, "cluster_name"),
    ],
)
def test_bad_input_is_refused_before_anything_is_registered(overrides: dict[str, Any], field: str) -> None:
    recording, error = run_invalid(lambda: Telemetry("telemetry", args(region=REGION, **overrides)))
    assert error.field == field and recording.resources == []


def test_a_name_too_long_for_the_role_is_refused() -> None:
    recording, error = run_invalid(lambda: Telemetry("t" * 50, args(region=REGION)))
    assert error.field == "name" and "64" in error.allowed and recording.resources == []
