"""TritonModelService with a canary release: the split ConfigMap clients read and the canary alerts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from inferstack.components.canary import TRAFFIC_KEY, CanaryRelease
from inferstack.components.model_repository import ServedModels
from inferstack.components.model_service import (
    ModelSource,
    TritonModelService,
    TritonModelServiceArgs,
    deployment,
)
from inferstack.serving.client.traffic_split import release_from_document
from tests.harness import run_invalid, run_program
from tests.schemas import validate_custom_resource, validate_k8s

RELEASE = CanaryRelease("ranker", stable_version=3, canary_version=4, weight_percent=2.5, mirror_percent=20)
ARGS = TritonModelServiceArgs(
    models=["ranker"],
    namespace="serving",
    source=ModelSource(role_arn="arn:aws:iam::123456789012:role/r", repository_uri="s3://models/ranker"),
    zones=3,
    canary=RELEASE,
    cluster_has_crds=True,
)


def test_a_canary_adds_the_split_config_map_and_its_alerts(vendor_dir: Path) -> None:
    recording, _ = run_program(lambda: TritonModelService("ranker", ARGS))
    config_map = recording.one("kubernetes:core/v1:ConfigMap", "ranker-traffic").inputs
    assert config_map["metadata"] == {
        "name": "ranker-traffic",
        "namespace": "serving",
        "labels": {"app.kubernetes.io/name": "ranker", "app.kubernetes.io/part-of": "inferstack"},
    }
    validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", **config_map})
    # What the service publishes is what a client builds its split from.
    assert release_from_document(config_map["data"][TRAFFIC_KEY]) == RELEASE
    rules = [
        r.inputs
        for r in recording.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
        if r.inputs["metadata"]["name"] == "ranker-canary"
    ]
    assert len(rules) == 1
    (group,) = rules[0]["spec"]["groups"]
    assert {r["alert"] for r in group["rules"]} == {"TritonCanaryFailureRatioHigh", "TritonCanaryLatencyHigh"}
    assert all('version="4"' in r["expr"] and 'version="3"' in r["expr"] for r in group["rules"])
    validate_custom_resource(
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", **rules[0]}, vendor_dir
    )


def test_triton_reports_latency_quantiles_per_version() -> None:
    args = deployment("ranker", ARGS, "s3://models/ranker")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--metrics-config=summary_latencies=true" in args


def test_no_canary_no_split_objects() -> None:
    recording, _ = run_program(lambda: TritonModelService("ranker", dataclasses.replace(ARGS, canary=None)))
    # Only the request front's files and the model-cache script: no traffic split.
    assert sorted(r.name for r in recording.of_type("kubernetes:core/v1:ConfigMap")) == [
        "ranker-model-cache",
        "ranker-request-front",
    ]
    names = {
        r.inputs["metadata"]["name"]
        for r in recording.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    }
    assert names == {"ranker-alerts"}


@pytest.mark.parametrize(
    ("canary", "field"),
    [
        (dataclasses.replace(RELEASE, model="search"), "canary.model"),
        (dataclasses.replace(RELEASE, canary_version=3), "canary.canary_version"),
        (dataclasses.replace(RELEASE, weight_percent=150), "canary.weight_percent"),
    ],
)
def test_a_bad_canary_registers_nothing(canary: CanaryRelease, field: str) -> None:
    recording, error = run_invalid(
        lambda: TritonModelService("ranker", dataclasses.replace(ARGS, canary=canary))
    )
    assert error.field == field
    assert recording.resources == []


def test_a_split_document_must_be_exactly_a_release() -> None:
    document = json.dumps({"model": "ranker", "stable_version": 1, "canary_version": 2, "weight_percent": 5})
    with pytest.raises(ValueError, match="exactly the keys"):
        release_from_document(document)


def template(args: TritonModelServiceArgs) -> str:
    """The pod template as the Deployment controller hashes it: any byte changed rolls the pods."""
    manifest = deployment("ranker", args, "s3://models/ranker")
    return json.dumps(manifest["spec"]["template"], sort_keys=True)


@pytest.mark.parametrize(
    "change",
    [
        {"canary": None},  # promoted, or rolled back: the versions go back to the repository's policy
        {"canary": dataclasses.replace(RELEASE, canary_version=5)},  # a new canary
        {"canary": dataclasses.replace(RELEASE, stable_version=4, canary_version=5)},  # promoted, next one
    ],
    ids=["canary-removed", "new-canary", "new-stable"],
)
def test_a_change_of_the_versions_served_rolls_the_pods(change: dict[str, object]) -> None:
    assert template(dataclasses.replace(ARGS, **change)) != template(ARGS)


def test_the_served_versions_are_what_the_pods_say() -> None:
    annotations = deployment("ranker", ARGS, "s3://models/ranker")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert json.loads(annotations["inferstack.io/served-versions"]) == {"ranker": [3, 4]}


@pytest.mark.parametrize(
    "change",
    [{"weight_percent": 50.0}, {"mirror_percent": 0.0}, {"p99_margin_ms": 5.0}, {"window": "30m"}],
)
def test_a_split_or_alert_change_rolls_nothing(change: dict[str, object]) -> None:
    """Every pod already serves both versions: a new weight is the clients' business alone."""
    assert template(dataclasses.replace(ARGS, canary=dataclasses.replace(RELEASE, **change))) == template(
        ARGS
    )


def test_the_split_changes_only_after_the_rollout() -> None:
    """Pulumi updates the split ConfigMap once the Deployment's rollout has finished (it waits for the
    new ReplicaSet to be available): no client asks for a version before every pod serves it; and the
    rollout surges one pod at a time and removes none first."""
    recording, _ = run_program(lambda: TritonModelService("ranker", ARGS))
    pods = recording.one("kubernetes:apps/v1:Deployment")
    split = recording.one("kubernetes:core/v1:ConfigMap", "ranker-traffic")
    assert pods.urn in split.dependencies
    assert pods.inputs["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def shipped(versions: tuple[int, ...], canary: CanaryRelease | None) -> TritonModelServiceArgs:
    """The service with models shipped by a ModelRepository, serving ``versions`` of ranker."""
    source = dataclasses.replace(ARGS.source, served=ServedModels({"ranker": versions}, bytes=1 << 20))
    return dataclasses.replace(ARGS, source=source, canary=canary)


def test_with_a_shipped_repository_the_served_versions_roll_the_pods_and_a_canary_does_not() -> None:
    """The fill's arguments name the versions the deploy ships: a new version policy rolls
    the pods. A canary's versions must be among them (refused otherwise), so every pod already serves
    both and setting, moving or removing the canary rolls nothing."""
    assert template(shipped((3, 4), RELEASE)) != template(shipped((3,), None))
    assert template(shipped((3, 4), RELEASE)) == template(shipped((3, 4), None))
    assert template(shipped((3, 4), dataclasses.replace(RELEASE, stable_version=4, canary_version=3))) == (
        template(shipped((3, 4), RELEASE))
    )
    assert template(shipped((4,), None)) != template(shipped((3, 4), None))
