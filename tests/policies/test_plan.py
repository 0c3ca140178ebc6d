"""`inferstack plan`: the resource tree of a stack, and its Kubernetes manifests valid against real schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferstack.serving.cli import main
from tests.conftest import ROOT
from tests.schemas import validate_custom_resource, validate_k8s

BUILT_IN = {"v1", "apps/v1", "policy/v1", "storage.k8s.io/v1"}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_plan_prints_the_tree_and_writes_valid_manifests(
    stack: str, tmp_path: Path, vendor_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--stack", stack, "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"stack {stack}:" in out
    # Components at the top, their resources indented beneath.
    assert "\n+ inferstack:cluster:Cluster" in out and "\n    + aws:eks/cluster:Cluster" in out
    assert "\n+ inferstack:model_service:TritonModelService" in out
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
