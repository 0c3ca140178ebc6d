"""The Pulumi program itself, run under mocks for every stack file, and its config validation."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from inferstack.components.charts import CHARTS, FLUENT_BIT, JAEGER, OPENTELEMETRY_COLLECTOR
from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import parse_config
from inferstack.infra.errors import InvalidInput
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recording, run_invalid, run_program

STACKS = ROOT / "stacks"


def engine_form(raw: dict[str, Any]) -> dict[str, str]:
    """Settings as the engine hands them to a program: one string per top-level key."""
    return {f"inferstack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def run_stack(stack: str) -> Recording:
    return offline.run_stack(STACKS, stack, DEPLOYER)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_builds_the_whole_platform(stack: str) -> None:
    recording = run_stack(stack)
    types = {r.type for r in recording}
    for component in (
        "inferstack:network:Network",
        "inferstack:cluster:Cluster",
        "inferstack:nodegroups:NodeGroups",
        "inferstack:model_store:ModelStore",
        "inferstack:gpu:GpuOperators",
        "inferstack:monitoring:Monitoring",
        "inferstack:autoscaling:Autoscaling",
        "inferstack:model_service:TritonModelService",
        "inferstack:telemetry:Telemetry",
    ):
        assert component in types, component
    releases = {r.inputs["chart"]: r for r in recording.of_type("kubernetes:helm.sh/v3:Release")}
    assert set(releases) == {c.name for c in CHARTS}
    for chart in (OPENTELEMETRY_COLLECTOR, JAEGER, FLUENT_BIT):
        release = releases[chart.name]
        assert release.name == f"inferstack-{stack}-telemetry-{chart.name}"
        assert (release.inputs["version"], release.inputs["namespace"]) == (chart.version, "telemetry")
    group = recording.one(
        "aws:cloudwatch/logGroup:LogGroup", f"inferstack-{stack}-telemetry-containers"
    ).inputs
    assert group["name"] == f"/inferstack/inferstack-{stack}/containers"
    pods = [d.inputs["spec"]["template"]["spec"] for d in recording.of_type("kubernetes:apps/v1:Deployment")]
    tritons = [pod["containers"][0] for pod in pods if pod["containers"][0]["name"] == "triton"]
    assert tritons
    args = tritons[0]["args"]
    assert "opentelemetry,url=http://opentelemetry-collector.telemetry.svc:4318/v1/traces" in args
    assert "--log-format=ISO8601" in args


def test_telemetry_can_be_turned_off() -> None:
    raw = {
        "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
        "telemetry": {"enabled": False},
        "services": [{"name": "ranker", "models": ["ranker"], "prefix": "ranker"}],
    }
    recording, _ = run_program(lambda: InferencePlatform("ml-dev", parse_config(engine_form(raw))))
    assert not recording.of_type("inferstack:telemetry:Telemetry")
    triton = recording.one("kubernetes:apps/v1:Deployment").inputs
    args = triton["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--trace-config")]


def test_prod_shape() -> None:
    recording = run_stack("prod")
    assert len(recording.of_type("aws:ec2/natGateway:NatGateway")) == 3
    groups = recording.of_type("aws:eks/nodeGroup:NodeGroup")
    assert len(groups) == 3 + 3 + 3  # system, on-demand GPU and spot GPU, per zone
    deployment = recording.one("kubernetes:apps/v1:Deployment", "ranker-deployment").inputs
    assert (
        deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"]
        == "DoNotSchedule"
    )
    args = deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[0] == "--source=s3://inferstack-prod-models-bucket/ranker"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][0] == "--model-repository=/models"
    coredns = recording.one("aws:eks/addon:Addon", "inferstack-prod-coredns")
    assert coredns.inputs["addonName"] == "coredns"


def test_dev_is_smaller() -> None:
    recording = run_stack("dev")
    assert len(recording.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(recording.of_type("aws:eks/nodeGroup:NodeGroup")) == 2 + 2 + 2


ODCR = {
    "kind": "odcr",
    "reservationIds": ["cr-0123456789abcdef0"],
    "instanceType": "g5.12xlarge",
    "instances": 1,
    "zone": "us-east-1a",
}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"environment": "qa"}, "inferstack:environment"),
        ({"network": {"zone": 3}}, "inferstack:network.zone"),
        ({"bogus": 1}, "inferstack:bogus"),
        ({"service": [{"name": "x"}]}, "inferstack:service"),
        ({"services": [{"name": "x", "models": ["x"]}]}, "inferstack:services[0].prefix"),
        # One model named "demo", not four named d, e, m, o.
        ({"services": [{"name": "x", "models": "demo", "prefix": "x"}]}, "inferstack:services[0].models"),
        (
            {"services": [{"name": "x", "models": ["x"], "prefix": "x", "minReplica": 2}]},
            "inferstack:services[0].minReplica",
        ),
        ({"gpu": {"maxPerZone": "lots"}}, "inferstack:gpu.maxPerZone"),
        ({"gpu": {"minSurvivingShare": "37.5"}}, "inferstack:gpu.minSurvivingShare"),
        (
            {
                "environment": "prod",
                "services": [{"name": "x", "models": ["x"], "prefix": "x", "minReplicas": 1}],
            },
            "inferstack:services[0].minReplicas",
        ),
        ({"services": [{"name": "x", "models": ["x"], "prefix": "../x"}]}, "inferstack:services[0].prefix"),
        ({"cluster": {"kubernetesVersion": "1.20"}}, "inferstack:cluster.kubernetesVersion"),
        ({"gpu": {"spotInstanceTypes": ["g5.xlarge"]}}, "inferstack:gpu.spotInstanceTypes"),
        ({"network": {"vpcCidr": "10.0.0.0/20"}}, "inferstack:network.vpcCidr"),
        # Deployable from where `pulumi up` runs: a private-only endpoint times out every Helm release.
        ({"cluster": {"publicAccessCidrs": []}}, "inferstack:cluster.publicAccessCidrs"),
        ({"cluster": {"publicAccessCidrs": ["10.0.0.0/8"]}}, "inferstack:cluster.publicAccessCidrs[0]"),
        ({"network": {"nat": "none"}}, "inferstack:network.nat"),
        ({"network": {"zones": "two"}}, "inferstack:network.zones"),
        ({"network": {"zones": 4}}, "inferstack:network.zones"),
        ({"network": {"zones": ["us-east-1a", "us-west-2a"]}}, "inferstack:network.zones[1]"),
        ({"cluster": {"name": "n" * 49}}, "inferstack:cluster.name"),
        ({"telemetry": {"sampleRate": 0}}, "inferstack:telemetry.sampleRate"),
        ({"telemetry": {"sampleRate": "1.5"}}, "inferstack:telemetry.sampleRate"),
        ({"telemetry": {"logRetentionDays": 10}}, "inferstack:telemetry.logRetentionDays"),
        ({"telemetry": {"traceRetentionHours": 0}}, "inferstack:telemetry.traceRetentionHours"),
        ({"capacity": "fargate"}, "inferstack:capacity"),
        ({"gpu": {"reserved": {**ODCR, "zone": None}}}, "inferstack:gpu.reserved.zone"),
        (
            {"gpu": {"reserved": {**ODCR, "instanceType": "m7i.xlarge"}}},
            "inferstack:gpu.reserved.instanceType",
        ),
        (
            {"gpu": {"reserved": {**ODCR, "reservationIds": ["r-1"]}}},
            "inferstack:gpu.reserved.reservationIds[0]",
        ),
        ({"gpu": {"reserved": {**ODCR, "instances": 0}}}, "inferstack:gpu.reserved.instances"),
        (
            {
                "gpu": {
                    "reserved": {**ODCR, "reservationIds": ["cr-0123456789abcdef0", "cr-1123456789abcdef0"]}
                }
            },
            "inferstack:gpu.reserved.reservationIds",
        ),
    ],
)
def test_bad_config_names_the_key_and_registers_nothing(raw: dict[str, Any], field: str) -> None:
    deployable = {"cluster": {"publicAccessCidrs": ["198.51.100.7/32"]}}
    given = {**deployable, **raw, "cluster": {**deployable["cluster"], **raw.get("cluster", {})}}
    recording, error = run_invalid(
        lambda: InferencePlatform("inferstack-dev", parse_config(engine_form(given)))
    )
    assert error.field == field, error
    assert recording.resources == []


def test_a_name_too_long_for_a_reserved_group_is_refused_first() -> None:
    """A reserved group's name is longer than a zone's: the 25 characters that fit every other
    name do not fit ``<name>-nodes-gpu-reserved-<8 digits>-ng-xxxxxxx`` (EKS: 63)."""
    given = {"cluster": {"publicAccessCidrs": ["198.51.100.7/32"]}, "gpu": {"reserved": ODCR}}
    recording, error = run_invalid(lambda: InferencePlatform("n" * 25, parse_config(engine_form(given))))
    assert error.field == "inferstack:cluster.name" and "gpu-reserved" in error.allowed
    assert recording.resources == []
    del given["gpu"]
    run_program(lambda: InferencePlatform("n" * 25, parse_config(engine_form(given))))


def test_the_pulumi_project_points_at_this_program() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["main"] == "stacks/" and project["stackConfigDir"] == "stacks"
    assert project["runtime"]["name"] == "python"


def test_values_as_pulumi_config_set_path_stores_them_are_read() -> None:
    """`pulumi config set --path` stores numbers as strings ("37.5"); they mean numbers."""
    config = parse_config(
        engine_form(
            {
                "gpu": {"maxPerZone": "3", "minSurvivingShare": "0.5"},
                "services": [{"name": "x", "models": ["x"], "prefix": "x", "queueTimeTargetMs": "37.5"}],
                "network": {"zones": ["us-east-1a", "us-east-1b"]},
            }
        )
        | {"aws:region": "eu-west-1", "other:thing": "ignored"}
    )
    assert config.gpu.max_per_zone == 3 and config.gpu.min_surviving_share == 0.5
    assert config.services[0].queue_time_target_ms == 37.5
    assert config.network.zones == ("us-east-1a", "us-east-1b")


def test_a_key_set_without_path_is_refused_with_the_command_that_works() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config({"inferstack:gpu.instanceType": "g6.xlarge"})
    assert caught.value.field == "inferstack:gpu.instanceType" and "--path" in caught.value.allowed


def readme_program() -> str:
    """The README's complete library program: the first python block of "One example"."""
    section = (ROOT / "README.md").read_text().split("## One example", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_library_program_runs_as_written() -> None:
    exported: dict[str, Any] = {}

    def program() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))
            exec(compile(readme_program(), "README.md", "exec"), {})

    recording, _ = run_program(program)
    assert {"kubeconfig", "ranker"} <= set(exported)
    platform = recording.one("inferstack:platform:InferencePlatform", "ml-prod")
    assert platform.parent_type == "pulumi:pulumi:Stack"
    assert recording.one("aws:eks/cluster:Cluster").inputs["name"] == "ml-prod"
    deployment = recording.one("kubernetes:apps/v1:Deployment", "ranker-deployment").inputs
    assert deployment["metadata"]["namespace"] == "ranker"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_kubernetes_resource_goes_through_the_clusters_provider(stack: str) -> None:
    """Providers travel in ResourceOptions: a resource on the default provider would deploy to
    whatever cluster the deployer's kubeconfig happens to name."""
    recording = run_stack(stack)
    kubernetes = [r for r in recording if r.custom and r.type.startswith("kubernetes:")]
    assert kubernetes
    assert [r.name for r in kubernetes if f"inferstack-{stack}-k8s" not in r.provider] == []


def test_an_error_reads_value_then_key_then_what_would_do() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config(engine_form({"network": {"zones": "two"}}))
    assert str(caught.value).startswith("'two': not valid for inferstack:network.zones: ")
    assert "a list of zone names" in str(caught.value)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# The standby stack in the same partition as its primary: replication cannot cross partitions.
PARTITIONED = [
    ("prod", {"aws:region": "us-gov-west-1"}, "aws-us-gov"),
    ("prod", {"aws:region": "cn-north-1"}, "aws-cn"),
    (
        "prod-dr",
        {
            "aws:region": "us-gov-west-1",
            "inferstack:failover.primaryRegion": "us-gov-east-1",
            "inferstack:failover.zone": "example.com",
            "inferstack:failover.sourceRanges": '["203.0.113.0/24"]',
            "inferstack:failover.certificateArns": json.dumps(
                [
                    f"arn:aws-us-gov:acm:{r}:123456789012:certificate/0f0e"
                    for r in ("us-gov-east-1", "us-gov-west-1")
                ]
            ),
        },
        "aws-us-gov",
    ),
]


@pytest.mark.parametrize(("stack", "settings", "partition"), PARTITIONED)
def test_every_arn_is_built_from_the_regions_partition(
    stack: str, settings: dict[str, str], partition: str
) -> None:
    """An ARN written as ``arn:aws:`` names nothing in GovCloud or China: IAM refuses the policy."""
    recording = offline.run_stack(STACKS, stack, {**DEPLOYER, **settings})
    arns = [s for r in recording for s in _strings(r.inputs) if "arn:aws" in s]
    assert arns, "no ARN in the plan: the check would pass vacuously"
    assert [a for a in arns if "arn:aws:" in a] == []
    assert any(f"arn:{partition}:" in a for a in arns)
    assert any(f"arn:{partition}:" in a for a in arns)


def test_the_outputs_tell_how_to_reach_each_service_and_its_admin_key() -> None:
    raw = {
        "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
        "services": [{"name": "ranker", "models": ["ranker"], "prefix": "ranker"}],
    }
    recording, outputs = run_program(
        lambda: InferencePlatform("ml-dev", parse_config(engine_form(raw))).outputs()
    )
    ranker = outputs["services"]["ranker"]
    assert ranker["http"] == "http://ranker.ranker.svc:8000"
    secret = recording.one("kubernetes:core/v1:Secret").inputs["metadata"]
    assert f"kubectl -n {secret['namespace']} get secret {secret['name']} " in ranker["admin_key"]
