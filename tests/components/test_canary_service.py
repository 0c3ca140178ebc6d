"""TritonModelService with a canary release: the split ConfigMap clients read and the canary alerts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from inferstack.components.canary import TRAFFIC_KEY, CanaryRelease
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
