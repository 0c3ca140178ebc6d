"""`inferstack plan`: the resource tree of a stack, and its Kubernetes manifests valid against real schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from inferstack.cli.main import main
from inferstack.components.charts import CHARTS
from inferstack.stacks import offline
from inferstack.stacks.offline import with_settings
from tests.conftest import ROOT
from tests.harness import DEPLOYER, DEPLOYER_ARGS, run_stack
from tests.schemas import BUILT_IN_API_VERSIONS as BUILT_IN
from tests.schemas import validate_custom_resource, validate_k8s


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_plan_prints_the_tree_and_writes_valid_manifests(
    stack: str, tmp_path: Path, vendor_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["plan", "--stack", stack, "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path)]
    assert main([*arguments, *DEPLOYER_ARGS]) == 0
    out = capsys.readouterr().out
    assert f"stack {stack}:" in out
    # Components at the top, their resources indented beneath.
    assert "\n+ inferstack:platform:InferencePlatform" in out
    assert "\n    + inferstack:cluster:Cluster" in out and "\n        + aws:eks/cluster:Cluster" in out
    assert "\n    + inferstack:model_service:TritonModelService" in out
    manifests = sorted((tmp_path / stack).rglob("*.yaml"))
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in manifests}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "Namespace",
    } <= kinds
    for path in manifests:
        document = yaml.safe_load(path.read_text())
        if document["apiVersion"] in BUILT_IN:
            validate_k8s(document)
        else:
            validate_custom_resource(document, vendor_dir)


def test_plans_are_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for attempt in range(2):
        assert (
            main(
                [
                    "plan",
                    "--stack",
                    "prod",
                    "--stacks-dir",
                    str(ROOT / "stacks"),
                    "--out",
                    str(tmp_path / str(attempt)),
                    *DEPLOYER_ARGS,
                ]
            )
            == 0
        )
        outputs.append(capsys.readouterr().out.replace(str(tmp_path / str(attempt)), "OUT"))
    assert outputs[0] == outputs[1]
    first, second = (
        sorted(p.relative_to(tmp_path / str(i)) for p in (tmp_path / str(i)).rglob("*.yaml"))
        for i in range(2)
    )
    assert first == second


def test_plan_json_has_the_shape_of_pulumi_preview_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan", "--stack", "prod", "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path), "--json"]
    argv += DEPLOYER_ARGS
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    steps = plan["steps"]
    assert {s["op"] for s in steps} == {"create"} and plan["changeSummary"] == {"create": len(steps)}
    assert plan["config"]["inferstack:environment"] == "prod"
    assert "198.51.100.7/32" in plan["config"]["inferstack:cluster"]  # the deployer's settings applied
    states = {s["urn"]: s["newState"] for s in steps}
    assert all(s["urn"] == s["newState"]["urn"] for s in steps)
    seen: set[str] = set()
    for step in steps:  # the engine's order: parent, dependencies and provider before the resource
        state = step["newState"]
        assert {state.get("parent", ""), *state.get("dependencies", [])} - {""} <= seen, state["urn"]
        if state["custom"] and not state["type"].startswith("pulumi:"):
            provider_urn = step["provider"].rsplit("::", 1)[0]
            assert provider_urn in seen and state["provider"] == step["provider"]
        seen.add(state["urn"])
    cluster = next(s for s in states.values() if s["type"] == "aws:eks/cluster:Cluster")
    assert cluster["inputs"]["accessConfig"]["authenticationMode"] == "API"  # engine form: camelCase
    assert cluster["provider"].startswith("urn:pulumi:prod::inferstack::pulumi:providers:aws::default_")
    assert "vpcConfig" in cluster["propertyDependencies"]
    service = next(s for s in states.values() if s["type"] == "kubernetes:keda.sh/v1alpha1:ScaledObject")
    assert service["parent"].endswith("TritonModelService::ranker")
    assert "pulumi:providers:kubernetes" in service["provider"]
    k8s_provider = next(s for s in states.values() if s["type"] == "pulumi:providers:kubernetes")
    assert k8s_provider["inputs"]["kubeconfig"] == "[secret]"
    assert (tmp_path / "prod").is_dir()  # the manifests are written as without --json


def test_each_run_has_its_own_stack_resource() -> None:
    for stack in ("dev", "prod"):
        recording = run_stack(ROOT / "stacks", stack)
        roots = {
            r.parent_urn
            for r in recording
            if r.parent_urn.endswith("pulumi:pulumi:Stack::inferstack-" + stack)
        }
        assert roots == {f"urn:pulumi:{stack}::inferstack::pulumi:pulumi:Stack::inferstack-{stack}"}
        assert all(f"urn:pulumi:{stack}::" in r.urn for r in recording)


def test_a_stack_nobody_could_deploy_is_refused_with_the_key_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed stack files leave the deployer's CIDRs to the deployer: without them the API
    endpoint would be private and every Helm release would time out from where `pulumi up` runs."""
    assert main(["plan", "--stack", "dev", "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "inferstack:cluster.publicAccessCidrs" in err and "pulumi config set --path" in err


def test_settings_apply_as_pulumi_config_set_path_would() -> None:
    config = {"inferstack:cluster": '{"kubernetesVersion": "1.35"}', "aws:region": "us-east-1"}
    merged = with_settings(
        config,
        {
            "inferstack:cluster.publicAccessCidrs": '["198.51.100.7/32"]',
            "aws:region": "eu-west-1",
            "inferstack:gpu.maxPerZone": "3",
        },
    )
    assert json.loads(merged["inferstack:cluster"]) == {
        "kubernetesVersion": "1.35",
        "publicAccessCidrs": ["198.51.100.7/32"],
    }
    assert merged["aws:region"] == "eu-west-1" and json.loads(merged["inferstack:gpu"]) == {"maxPerZone": 3}


def test_the_plan_follows_the_stacks_region() -> None:
    recording = offline.run_stack(ROOT / "stacks", "dev", {**DEPLOYER, "aws:region": "eu-west-1"})
    subnets = {r.inputs["availabilityZone"] for r in recording.of_type("aws:ec2/subnet:Subnet")}
    assert subnets == {"eu-west-1a", "eu-west-1b"}
    kubeconfig = recording.one("pulumi:providers:kubernetes").inputs["kubeconfig"]["value"]
    assert "--region\n      - eu-west-1" in kubeconfig or '"eu-west-1"' in kubeconfig


def test_plan_shows_each_release_at_its_pinned_chart_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["plan", "-s", "prod", "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path)]
    assert main([*arguments, *DEPLOYER_ARGS]) == 0
    line = re.compile(r"^ *\+ kubernetes:helm\.sh/v3:Release +(\S+)  \(chart (\S+) (\S+)\)$")
    releases = [m.groups() for m in map(line.match, capsys.readouterr().out.splitlines()) if m]
    assert {chart: version for _, chart, version in releases} == {c.name: c.version for c in CHARTS}
    telemetry = {name: chart for name, chart, _ in releases if name.startswith("inferstack-prod-telemetry-")}
    assert sorted(telemetry.values()) == ["fluent-bit", "jaeger", "opentelemetry-collector"]
