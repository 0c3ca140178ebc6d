"""PyTorch -> model repository -> emulated S3 -> real Triton -> client, compared with PyTorch itself."""

from __future__ import annotations

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.repository import generate_inputs, run_reference
from inferstack.serving.models.specs import RepositoryModel

pytestmark = pytest.mark.real_server


def model(runtime: LocalRuntime, name: str) -> RepositoryModel:
    return next(m for m in runtime.models if m.name == name)


def assert_matches(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert set(actual) == set(expected)
    for name, want in expected.items():
        assert actual[name].shape == want.shape and actual[name].dtype == want.dtype, name
        np.testing.assert_allclose(actual[name], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    ("name", "batch", "length"),
    [("ranker", 1, 5), ("ranker", 5, 5), ("sequence", 3, 2), ("sequence", 2, 11), ("demo", 4, 5)],
)
def test_triton_answers_like_pytorch(
    served: LocalRuntime, protocol: str, name: str, batch: int, length: int
) -> None:
    served_model = model(served, name)
    inputs = generate_inputs(served_model, batch=batch, variable_length=length, seed=batch * 100 + length)
    url = served.http_url if protocol == "http" else served.grpc_url
    with TritonClient(url, protocol=protocol) as client:  # type: ignore[arg-type]
        actual = client.infer(name, inputs)
    assert_matches(run_reference(served_model, inputs), actual)


def metric(runtime: LocalRuntime, name: str, model_name: str) -> float:
    text = urllib.request.urlopen(runtime.metrics_url, timeout=5).read().decode()
    match = re.search(rf'^{name}{{model="{model_name}",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model_name} not in Triton's metrics"
    return float(match.group(1))


def test_concurrent_requests_are_batched_and_each_answered_correctly(served: LocalRuntime) -> None:
    sequence = model(served, "sequence")
    # Two lengths interleaved: the python model must group what it can concatenate.
    requests = [
        generate_inputs(sequence, batch=1 + i % 3, variable_length=4 + i % 2, seed=i) for i in range(48)
    ]
    before = (
        metric(served, "nv_inference_exec_count", "sequence"),
        metric(served, "nv_inference_count", "sequence"),
    )

    def ask(inputs: dict[str, Any]) -> dict[str, Any]:
        with TritonClient(served.http_url, timeout_s=30) as client:
            return client.infer("sequence", inputs)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, requests))
    for inputs, answer in zip(requests, answers, strict=True):
        assert_matches(run_reference(sequence, inputs), answer)
    executions = metric(served, "nv_inference_exec_count", "sequence") - before[0]
    inferences = metric(served, "nv_inference_count", "sequence") - before[1]
    assert inferences == sum(r["tokens"].shape[0] for r in requests)
    assert executions < len(requests), (
        "dynamic batching should merge concurrent requests into fewer executions"
    )


def test_smoke_covers_every_model_over_both_protocols(served: LocalRuntime) -> None:
    results = served.smoke()
    assert {(r.model, r.protocol) for r in results} == {
        (m, p) for m in ("demo", "ranker", "sequence") for p in ("http", "grpc")
    }
    assert all(r.ok and r.max_abs_diff <= 1e-5 for r in results), results


def test_served_config_is_the_published_one(served: LocalRuntime) -> None:
    with TritonClient(served.grpc_url, protocol="grpc") as client:
        config = client.model_config("sequence")
        metadata = client.model_metadata("ranker")
    assert config["max_batch_size"] == 16
    assert [i["dims"] for i in config["input"]] == [["-1", "4"]]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("features", "FP32"),
        ("ids", "INT64"),
    ]
    assert served.model_repository_uri.startswith("s3://http://127.0.0.1:")


def test_triton_loads_from_the_folder_the_node_cache_filled(served: LocalRuntime) -> None:
    triton = next(c for c in served.children if c.name == "triton-0")
    folder = Path(str(served.work_dir)) / "triton-0-models"
    assert f"--model-repository={folder}" in triton.argv
    assert not any(a.startswith("--model-repository=s3://") for a in triton.argv)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "demo",
        "ranker",
        "sequence",
    ]
    start = served.replica_starts[0]
    assert start.downloaded_bytes > 0 and 0 < start.fill_s < start.ready_s
