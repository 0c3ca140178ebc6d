"""The command line, run for real: local up, models build and publish, and bad input."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch

from inferstack.cli.main import main
from inferstack.cli.output import brief_error, json_safe
from inferstack.serving.local.demo import build_demo_repository
from tests.conftest import require_tool
from tests.serving.conftest import Ranker


def strict_json(text: str) -> Any:
    """Parse as a strict JSON reader (jq, JavaScript) would: no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


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
@pytest.mark.usefixtures("triton_present")
def test_local_up_once_json_serves_the_demo_for_real() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferstack.cli.main", "local", "up", "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = strict_json(result.stdout)
    assert summary["ok"] is True and summary["models"] == ["demo"]
    assert {(s["protocol"], s["ok"]) for s in summary["smoke"]} == {("http", True), ("grpc", True)}
    assert summary["endpoints"]["model_repository"].startswith("s3://http://127.0.0.1:")
    require_tool("prometheus")
    metrics = summary["metrics"]["demo"]  # the cluster's PromQL, evaluated on the local Triton
    assert metrics["request_rate"] > 0 and metrics["average_batch_size"] >= 1
    assert metrics["queue_time_per_request_ms"] >= 0 and metrics["pending_requests"] == 0


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
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
    summary = strict_json(capsys.readouterr().out)
    assert summary["ok"] and summary["models"] == ["ranker"]


class Noisy(torch.nn.Module):
    """Answers differently every time: Triton's answer cannot match the in-process one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_local_up_once_exits_1_and_reports_each_failing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    torch.jit.script(Noisy()).save(str(tmp_path / "noisy.pt"))
    build = ["--name", "noisy", "--input", "x:FP32:4", "--output", "y:FP32:4", "--out", str(repo)]
    assert main(["models", "build", "--torchscript", str(tmp_path / "noisy.pt"), *build]) == 0
    # A config that no longer matches its TorchScript: the in-process reference itself fails.
    config = build_demo_repository(repo) / "demo" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: 16", "dims: 8"))
    capsys.readouterr()

    code = main(["local", "up", "--repository", str(repo), "--once", "--json", "--no-prometheus"])

    summary = strict_json(capsys.readouterr().out)
    assert code == 1 and summary["ok"] is False
    smoke = {(s["model"], s["protocol"]): s for s in summary["smoke"]}
    assert set(smoke) == {(m, p) for m in ("demo", "noisy") for p in ("http", "grpc")}
    for protocol in ("http", "grpc"):
        noisy, demo = smoke["noisy", protocol], smoke["demo", protocol]
        assert not noisy["ok"] and 1e-5 < noisy["max_abs_diff"] < 1 and not noisy["error"]
        assert not demo["ok"] and demo["max_abs_diff"] is None
        assert "reference run failed" in demo["error"] and "FP32[2, 8]" in demo["error"]


def test_brief_error_keeps_the_first_and_last_line() -> None:
    traceback = "demo inputs: bad (RuntimeError: failed in TorchScript\n  File x\n    ~~~ <--- HERE\nRuntimeError: 2x8 and 16x32\n)"
    assert (
        brief_error(traceback)
        == "demo inputs: bad (RuntimeError: failed in TorchScript ... RuntimeError: 2x8 and 16x32"
    )
    assert brief_error("one line\n") == "one line"


def test_json_safe_turns_non_finite_numbers_into_null() -> None:
    value = {"a": [1.0, float("inf")], "b": {"c": float("nan"), "d": (float("-inf"), "x", 2)}}
    assert json_safe(value) == {"a": [1.0, None], "b": {"c": None, "d": [None, "x", 2]}}


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
    assert f"not valid for {field}" in error, error
    assert not (tmp_path / "r").exists()


def test_publish_to_a_bad_destination_or_missing_bucket(
    tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo").mkdir()
    assert main(["models", "publish", str(tmp_path / "repo"), "bucket/prefix"]) == 2
    assert "destination" in capsys.readouterr().err
    for url in ("127.0.0.1:5000", "ftp://host", "http://"):
        assert (
            main(["models", "publish", str(tmp_path / "repo"), "s3://bucket/x", "--endpoint-url", url]) == 2
        )
        assert "not valid for --endpoint-url" in capsys.readouterr().err
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


@pytest.mark.parametrize(
    ("blocked", "arguments", "extra"),
    [
        (
            "torch",
            [
                *("models", "build", "--torchscript", "m.pt", "--name", "m"),
                *("--input", "x:FP32:4", "--output", "y:FP32:4", "--out", "repo"),
            ],
            "serving",
        ),
        ("pulumi_policy", ["policy", "check", "--stack", "dev"], "policy"),
        # The command's whole extra, not the first missing module's: one install, not two rounds.
        ("numpy", ["local", "up", "--once"], "local"),
        ("torch", ["bench", "--concurrency", "1"], "bench"),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(
    blocked: str, arguments: list[str], extra: str
) -> None:
    """An install without the extra has no such module: the CLI names the extra, no traceback."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; "
        "from inferstack.cli.main import main; "
        f"sys.exit(main({arguments!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"pip install 'inferstack[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "field"),
    [(["--max-batch-size", "100000"], "max_batch_size"), (["--version", "0"], "version")],
)
def test_out_of_range_build_numbers_exit_2(
    tmp_path: Path, ranker_file: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], field: str
) -> None:
    argv = ["models", "build", "--torchscript", str(ranker_file), "--out", str(tmp_path / "r"), *BUILD]
    assert main([*argv, *arguments]) == 2
    assert f"not valid for {field}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_hung_s3_endpoint_times_out_in_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = build_demo_repository(tmp_path / "repo")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        assert main(["models", "publish", str(repo), "s3://bucket/x", "--endpoint-url", url]) == 1
        elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert elapsed < 20, f"{elapsed:.0f} s"
    assert out.startswith(f"publishing {repo} to s3://bucket/x ({url})")
    assert "failed" in err and "timeout" in err.lower(), err


def test_publish_verify_and_overwrite_through_the_cli(
    tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="models")
    repo = build_demo_repository(tmp_path / "repo")
    target = ["s3://models/prod", "--endpoint-url", moto_endpoint]
    assert main(["models", "publish", str(repo), *target]) == 0
    assert main(["models", "verify", *target]) == 0
    assert capsys.readouterr().out.endswith("s3://models/prod: every object matches\n")
    config = repo / "demo" / "config.pbtxt"
    config.write_text(
        config.read_text().replace("max_queue_delay_microseconds: 500", "max_queue_delay_microseconds: 900")
    )
    assert main(["models", "publish", str(repo), *target]) == 2
    assert "immutable" in capsys.readouterr().err
    assert main(["models", "publish", str(repo), *target, "--overwrite"]) == 0
    boto3.client("s3", endpoint_url=moto_endpoint).put_object(
        Bucket="models", Key="prod/demo/1/model.pt", Body=b"tampered"
    )
    capsys.readouterr()
    assert main(["models", "verify", *target]) == 1
    out = capsys.readouterr().out
    assert "demo/1/model.pt: sha256" in out and "1 problem(s)" in out


def test_publish_served_only_and_prune_through_the_cli(
    tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket="served")
    repo = build_demo_repository(tmp_path / "repo")
    target = ["s3://served/prod", "--endpoint-url", moto_endpoint]
    assert main(["models", "publish", str(repo), *target]) == 0
    shutil.copytree(repo / "demo" / "1", repo / "demo" / "2")  # a new version; the policy serves the newest
    assert main(["models", "publish", str(repo), *target, "--served-only", "--prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned demo/1/model.pt" in out and ", 2 pruned" in out, out
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket="served")["Contents"])
    assert not [key for key in listed if key.startswith("prod/demo/1/")], listed
    assert main(["models", "verify", *target]) == 0


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_local_up_with_replicas_scrapes_every_replica() -> None:
    require_tool("haproxy")
    require_tool("prometheus")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferstack.cli.main",
            "local",
            "up",
            "--once",
            "--json",
            "--replicas",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = strict_json(result.stdout)
    endpoints = summary["endpoints"]
    assert {"triton-0 metrics", "triton-1 metrics", "http", "grpc"} <= set(endpoints)
    assert all(r["ok"] for r in summary["smoke"])
    assert summary["scraped"] == ["local-0", "local-1"]  # Prometheus scrapes every replica
    assert summary["metrics"]["demo"]["request_rate"] is not None
