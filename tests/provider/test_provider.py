"""The component provider: its schema over the provider's real gRPC server, and each component
constructed from schema-shaped inputs under mocks, as another language's program would ask for it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from inferstack.provider import generate
from inferstack.provider.components import InferencePlatform, TritonModelService
from inferstack.testing import Recording, record
from tests.conftest import ROOT

COMPONENTS = ["inferstack:index:InferencePlatform", "inferstack:index:TritonModelService"]


def test_the_generated_args_match_the_stack_config() -> None:
    assert (ROOT / "provider" / "args.py").read_text() == generate.render(), (
        "stale: run python -m inferstack.provider.generate"
    )


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """GetSchema from the provider process started as the Pulumi engine starts a plugin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstack.provider", "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = provider_pb2_grpc.ResourceProviderStub(channel).GetSchema(
                provider_pb2.GetSchemaRequest(version=0), timeout=60
            )
        return dict(json.loads(answer.schema))
    finally:
        process.terminate()
        process.wait(timeout=30)


def properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for token, resource in schema["resources"].items():
        for kind in ("inputProperties", "properties"):
            for name, prop in resource.get(kind, {}).items():
                yield f"{token}.{kind}.{name}", prop
    for token, typ in schema["types"].items():
        for name, prop in typ.get("properties", {}).items():
            yield f"{token}.{name}", prop


def test_the_schema_names_both_components_at_the_package_version(schema: dict[str, Any]) -> None:
    assert schema["name"] == "inferstack"
    assert schema["version"] == metadata.version("inferstack")
    assert sorted(schema["resources"]) == COMPONENTS
    assert all(schema["resources"][token]["isComponent"] for token in COMPONENTS)


def test_every_type_and_property_of_the_schema_is_described(schema: dict[str, Any]) -> None:
    found = dict(properties(schema))
    assert len(found) > 60
    assert [name for name, prop in found.items() if not prop.get("description")] == []
    assert all(resource.get("description") for resource in schema["resources"].values())
    assert all(typ.get("description") for typ in schema["types"].values())


def test_the_platform_takes_every_stack_key_in_its_schema_spelling(schema: dict[str, Any]) -> None:
    network = schema["types"]["inferstack:index:NetworkArgs"]["properties"]
    assert sorted(network) == ["nat", "vpcCidr", "zoneNames", "zones"]
    inputs = schema["resources"]["inferstack:index:InferencePlatform"]["inputProperties"]
    assert {"environment", "cluster", "network", "gpu", "services", "telemetry", "failover"} <= set(inputs)


def construct(token: str, name: str, inputs: dict[str, Any]) -> Recording:
    provider = ComponentProvider([InferencePlatform, TritonModelService], "inferstack", version="0.0.0")
    recording, _ = record(lambda: provider.construct(name, token, inputs))
    return recording


def test_the_platform_is_constructed_from_schema_shaped_inputs() -> None:
    recording = construct(
        "inferstack:index:InferencePlatform",
        "ml",
        {
            "environment": "staging",
            "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
            "network": {"zoneNames": ["us-east-1a", "us-east-1b"]},
            "services": [{"name": "ranker", "models": ["ranker"], "prefix": "ranker", "minReplicas": 2}],
        },
    )
    wrapper = recording.one("inferstack:index:InferencePlatform", "ml")
    platform = recording.one("inferstack:platform:InferencePlatform", "ml")
    assert platform.parent_urn == wrapper.urn
    subnets = recording.of_type("aws:ec2/subnet:Subnet")
    assert {s.inputs["availabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"}
    assert [r.name for r in recording.of_type("inferstack:model_service:TritonModelService")] == ["ranker"]


def test_a_bad_input_is_refused_with_its_key_before_anything_is_registered() -> None:
    with pytest.raises(
        Exception, match=r"^0: not valid for inferstack:gpu\.maxPerZone: Input should be greater"
    ):
        construct("inferstack:index:InferencePlatform", "ml", {"gpu": {"maxPerZone": 0}})


def test_a_service_is_constructed_on_a_cluster_of_its_own() -> None:
    recording = construct(
        "inferstack:index:TritonModelService",
        "ranker",
        {
            "models": ["ranker"],
            "roleArn": "arn:aws:iam::123456789012:role/ranker",
            "repositoryUri": "s3://models/ranker",
            "zones": 3,
            "clusterHasCrds": True,
        },
    )
    pod = recording.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]
    # The model-cache fill reads the repository from S3 before Triton starts on the local copy.
    fill = next(c for c in pod["initContainers"] if c["name"] == "model-cache")
    assert any(arg == "--source=s3://models/ranker" for arg in fill["args"]), fill["args"]


def test_the_yaml_example_asks_for_what_the_schema_offers_and_constructs(schema: dict[str, Any]) -> None:
    """What the YAML runtime would send: each resource's properties, checked against the schema and
    constructed as the provider's Construct would."""
    program = yaml.safe_load((ROOT / "examples" / "platform-yaml" / "Pulumi.yaml").read_text())
    assert program["packages"]["inferstack"] == "../../provider"
    assert (ROOT / "examples" / "platform-yaml" / Path(program["packages"]["inferstack"])).resolve() == (
        ROOT / "provider"
    )
    for name, resource in program["resources"].items():
        token = resource["type"].replace("inferstack:", "inferstack:index:")
        inputs = schema["resources"][token]["inputProperties"]
        assert set(resource["properties"]) <= set(inputs), name
        recording = construct(token, name, resource["properties"])
        assert recording.of_type("aws:eks/cluster:Cluster")
    outputs = schema["resources"]["inferstack:index:InferencePlatform"]["properties"]
    for expression in program["outputs"].values():
        assert expression.removeprefix("${platform.").removesuffix("}") in outputs
