"""The canary split and mirror on a real Triton serving two versions, counted by Triton's own metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from inferstack.cli.main import main
from inferstack.components import promql
from inferstack.components.canary import CanaryRelease, canary_rule_group
from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import TritonClient, TritonRequestError
from inferstack.serving.client.traffic_split import TrafficSplit, _Diffusion, exercise, settled_counts
from inferstack.serving.local.demo import build_canary_demo_repository
from inferstack.serving.local.processes import SMOKE_TOLERANCE
from inferstack.serving.local.prometheus import LocalPrometheus, ScrapeTarget
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.build import build_model
from inferstack.serving.models.precision import served_tolerance
from inferstack.serving.models.repository import demo_model, generate_inputs, read_repository
from inferstack.serving.models.specs import ModelOptions, SpecificVersions
from tests.conftest import require_tool

NAMESPACE = "serving"


@pytest.mark.parametrize("percent", [0.0, 1.0, 2.5, 20.0, 33.3, 100.0])
def test_the_split_is_exact_at_every_count(percent: float) -> None:
    split = _Diffusion(percent)
    taken = 0
    for count in range(1, 1001):
        taken += split.next()
        assert abs(taken - count * percent / 100) < 1, (count, taken)


def build_versions(path: Path, versions: tuple[int, ...], policy: SpecificVersions) -> Path:
    module, example = demo_model()
    for version in versions:
        build_model(
            module,
            example,
            name="demo",
            repository=path,
            version=version,
            options=ModelOptions(version_policy=policy),
        )
    return path


def test_the_default_version_is_the_highest_the_policy_serves(tmp_path: Path) -> None:
    # Version 2 is on disk but not served: the smoke must compare Triton's answer with version 1.
    (model,) = read_repository(build_versions(tmp_path, (1, 2), SpecificVersions((1,))))
    assert model.version == 1 and model.torchscript == tmp_path / "demo" / "1" / "model.pt"


def test_a_policy_naming_a_missing_version_is_refused_before_anything_starts(tmp_path: Path) -> None:
    build_versions(tmp_path, (1,), SpecificVersions((1, 2)))
    with pytest.raises(InvalidInput, match=r"for every version its version policy serves \(\[1, 2\]\)"):
        read_repository(tmp_path)


def test_local_up_refuses_a_canary_of_versions_not_served_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = build_versions(tmp_path / "repo", (1, 2), SpecificVersions((2,)))
    command = ["local", "up", "--repository", str(repository), "--once", "--no-prometheus"]
    assert main([*command, "--canary", "demo:1:2", "--work-dir", str(tmp_path / "work")]) == 2
    assert "versions its version policy serves: [2]" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    assert main([*command, "--canary", "other:1:2"]) == 2
    assert "a model of the repository: ['demo']" in capsys.readouterr().err


class Broken(torch.nn.Module):
    """A canary that fails every request it gets, as a bad release would."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if bool(features.abs().sum() >= 0):
            raise RuntimeError("this canary is broken")
        return features


def build_flaky(path: Path) -> None:
    """``flaky``: version 1 the demo network, version 2 a release that fails every request."""
    module, example = demo_model()
    for version in (1, 2):
        build_model(
            module,
            example,
            name="flaky",
            repository=path,
            version=version,
            input_names=["features"],
            output_names=["probabilities"],
            options=ModelOptions(version_policy=SpecificVersions((1, 2))),
        )
    torch.jit.script(Broken()).save(str(path / "flaky" / "2" / "model.pt"))


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    repository = build_canary_demo_repository(tmp_path_factory.mktemp("canary"))
    build_flaky(repository)
    with LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("runtime"), progress=print) as runtime:
        yield runtime


def requests_for(runtime: LocalRuntime, model: str, count: int) -> list[dict[str, np.ndarray]]:
    served = next(m for m in runtime.models if m.name == model)
    return [generate_inputs(served, batch=1 + i % 3, seed=i) for i in range(count)]


@pytest.mark.real_server
def test_split_and_mirror_on_real_requests_counted_by_triton(two_versions: LocalRuntime) -> None:
    release = CanaryRelease("demo", stable_version=1, canary_version=2, weight_percent=20, mirror_percent=50)
    tolerance = served_tolerance(two_versions.repository / "demo" / "2", SMOKE_TOLERANCE)
    run = exercise(
        two_versions.http_url,
        two_versions.metrics_url,
        release,
        requests_for(two_versions, "demo", 100),
        tolerance=tolerance,
    )
    stats = run.stats
    assert (stats.stable, stats.canary, stats.mirrored) == (80, 20, 40)
    assert stats.mirror_errors == stats.mirror_dropped == stats.mirror_mismatches == 0
    # Version 2 is the FP16 build: its answers differ from version 1's, within that build's tolerance.
    assert 0 < stats.mirror_max_abs_diff <= tolerance
    # Triton's own counts: the canary served its share plus every mirrored request.
    assert run.triton_success == {1: 80, 2: 20 + 40}
    assert run.triton_failure == {1: 0, 2: 0}


@pytest.fixture(scope="module")
def prometheus(two_versions: LocalRuntime) -> Iterator[LocalPrometheus]:
    require_tool("prometheus")
    labels = {"namespace": NAMESPACE, "service": "flaky", "pod": "flaky-5f7b9c-abcde"}
    with LocalPrometheus(
        [ScrapeTarget("triton", two_versions.metrics_url, labels)], interval_s=1.0
    ) as running:
        assert running.wait_for(f'nv_inference_request_success{{namespace="{NAMESPACE}",model="flaky"}}')
        yield running


@pytest.mark.real_server
def test_mirrored_failures_never_reach_the_caller_and_fire_the_canary_alert(
    two_versions: LocalRuntime, prometheus: LocalPrometheus
) -> None:
    release = CanaryRelease("flaky", stable_version=1, canary_version=2, weight_percent=0, mirror_percent=100)
    requests = requests_for(two_versions, "flaky", 30)
    with TrafficSplit(two_versions.http_url, release) as split, TritonClient(two_versions.http_url) as direct:
        for inputs in requests:
            answer = split.infer(inputs)
            stable = direct.infer("flaky", inputs, version=1)
            np.testing.assert_array_equal(answer["probabilities"], stable["probabilities"])
    assert (split.stats.stable, split.stats.mirrored, split.stats.mirror_errors) == (30, 0, 30)
    # A request the split sends to the broken canary is the caller's answer, so its error is too.
    to_canary = CanaryRelease("flaky", 1, 2, weight_percent=100)
    with (
        TrafficSplit(two_versions.http_url, to_canary) as split,
        pytest.raises(TritonRequestError, match="broken"),
    ):
        split.infer(requests[0])
    # Triton counted each canary failure as a failure (the python backend's errors included).
    counts = settled_counts(two_versions.metrics_url, "flaky")
    assert counts[2] == {"success": 0, "failure": 30 + 1}
    assert counts[1] == {"success": 30 + 30, "failure": 0}
    # The alert's own expression, evaluated by a real Prometheus on this Triton's metrics.
    group = canary_rule_group(service="flaky", namespace=NAMESPACE, canary=release)
    failing = next(r for r in group["rules"] if r["alert"] == "TritonCanaryFailureRatioHigh")
    deadline = time.monotonic() + 20
    while not (result := prometheus.query(failing["expr"])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert result, f"no data for {failing['expr']}"
    assert float(result[0]["value"][1]) > 0.9  # every canary request failed, no stable one did
    stable_only = promql.triton_version_failure_ratio(model="flaky", version=1, namespace=NAMESPACE)
    assert float(prometheus.query(stable_only)[0]["value"][1]) == 0


@pytest.mark.real_server
def test_p99_of_each_version_comes_from_triton(
    two_versions: LocalRuntime, prometheus: LocalPrometheus
) -> None:
    with TrafficSplit(two_versions.http_url, CanaryRelease("demo", 1, 2, weight_percent=50)) as split:
        for inputs in requests_for(two_versions, "demo", 10):
            split.infer(inputs)
    queries = {
        version: promql.triton_version_p99_ms(model="demo", version=version, namespace=NAMESPACE)
        for version in (1, 2)
    }
    excess = promql.triton_canary_p99_excess_ms(
        model="demo", stable_version=1, canary_version=2, namespace=NAMESPACE
    )
    deadline = time.monotonic() + 20
    values: dict[int, float] = {}
    while time.monotonic() < deadline:
        values = {v: float(r[0]["value"][1]) for v, q in queries.items() if (r := prometheus.query(q))}
        if len(values) == 2 and all(np.isfinite(list(values.values()))):
            break
        time.sleep(0.5)
    assert len(values) == 2 and all(0 < ms < 60_000 for ms in values.values()), values
    (difference,) = prometheus.query(excess)
    assert float(difference["value"][1]) == pytest.approx(values[2] - values[1], abs=1e-6)


@pytest.mark.real_server
def test_local_up_shows_the_split_and_the_mirror(
    capsys: pytest.CaptureFixture[str], triton_present: None
) -> None:
    require_tool("prometheus")
    command = ["local", "up", "--canary", "--once", "--json", "--canary-requests", "50"]
    assert main([*command, "--canary-weight", "10", "--mirror", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    canary = summary["canary"]
    assert canary["release"]["model"] == "demo" and canary["requests"] == 50
    assert (canary["stats"]["stable"], canary["stats"]["canary"], canary["stats"]["mirrored"]) == (45, 5, 9)
    assert canary["triton_success"] == {"1": 45, "2": 5 + 9}
    assert summary["ok"] and all(r["ok"] for r in summary["smoke"])
    # The canary alerts' signals, by a real Prometheus: no failures on either side, both p99s known.
    assert canary["promql"]["failure_ratio_excess"] == 0
    assert np.isfinite(canary["promql"]["p99_excess_ms"])
