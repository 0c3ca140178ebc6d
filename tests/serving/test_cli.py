"""The command line, run for real: local up, models build and publish, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import torch
from moto.server import ThreadedMotoServer

from inferstack.serving.cli import main
from inferstack.serving.local import free_port
from tests.conftest import require_tool
from tests.serving.conftest import Ranker


@pytest.fixture
def moto_endpoint(fake_aws_env: None) -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def ranker_file(tmp_path: Path) -> Path:
    path = tmp_path / "ranker.pt"
    torch.jit.script(Ranker()).save(str(path))
    return path


BUILD = [
    "--name",
    "ranker",
    "--input",
    "features:FP32:6",
    "--input",
    "ids:INT64:-1",
    "--output",
    "score:FP32:1",
]


@pytest.mark.real_server
def test_local_up_once_json_serves_the_demo_for_real() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferstack.serving.cli", "local", "up", "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["models"] == ["demo"]
    assert {(s["protocol"], s["ok"]) for s in summary["smoke"]} == {("http", True), ("grpc", True)}
    assert summary["endpoints"]["model_repository"].startswith("s3://http://127.0.0.1:")
    require_tool("prometheus")
    metrics = summary["metrics"]["demo"]  # the cluster's PromQL, evaluated on the local Triton
    assert metrics["request_rate"] > 0 and metrics["average_batch_size"] >= 1
    assert metrics["queue_time_per_request_ms"] >= 0 and metrics["pending_requests"] == 0


@pytest.mark.real_server
def test_build_publish_and_serve_a_users_model(
    tmp_path: Path, ranker_file: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert main(["models", "build", "--torchscript", str(ranker_file), *BUILD, "--out", str(repo)]) == 0
    assert (repo / "ranker" / "config.pbtxt").is_file()
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="team-models")
    assert (
        main(["models", "publish", str(repo), "s3://team-models/prod", "--endpoint-url", moto_endpoint]) == 0
    )
    assert "3 uploaded, 0 unchanged" in capsys.readouterr().out
    assert (
        main(["models", "publish", str(repo), "s3://team-models/prod", "--endpoint-url", moto_endpoint]) == 0
    )
    assert "0 uploaded, 3 unchanged" in capsys.readouterr().out
    assert main(["local", "up", "--repository", str(repo), "--once", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["models"] == ["ranker"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--input", "features:FP64:6"], "--input[0]"),
        (
            ["--input", "features:FP32:6", "--input", "ids:INT64:-1", "--output", "score:FP32:2"],
            "output score",
        ),
        (["--name", "../up", "--input", "features:FP32:6", "--input", "ids:INT64:-1"], "name"),
        (
            ["--input", "features:FP32:6", "--input", "ids:INT64:-1", "--max-batch-size", "-2"],
            "max_batch_size",
        ),
    ],
)
def test_bad_build_arguments_exit_2_naming_the_field(
    tmp_path: Path, ranker_file: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], field: str
) -> None:
    base = [
        "models",
        "build",
        "--torchscript",
        str(ranker_file),
        "--name",
        "ranker",
        "--out",
        str(tmp_path / "r"),
    ]
    outputs = [] if "--output" in arguments else ["--output", "score:FP32:1"]
    assert main([*base, *arguments, *outputs]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"inferstack: {field}"), error
    assert not (tmp_path / "r").exists()


def test_publish_to_a_bad_destination_or_missing_bucket(
    tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo").mkdir()
    assert main(["models", "publish", str(tmp_path / "repo"), "bucket/prefix"]) == 2
    assert "destination" in capsys.readouterr().err
    from tests.serving.conftest import build_test_repository

    repo = build_test_repository(tmp_path / "built")
    assert (
        main(["models", "publish", str(repo), "s3://no-such-bucket/x", "--endpoint-url", moto_endpoint]) == 2
    )
    assert "a bucket that exists" in capsys.readouterr().err


def test_local_up_with_a_missing_repository_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "up", "--repository", str(tmp_path / "nothing"), "--once"]) == 2
    assert "repository" in capsys.readouterr().err
