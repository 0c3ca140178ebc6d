"""`inferstack policy check`: the stack through the pack's real Analyzer, as a table or JSON, with
exit codes 0 (no mandatory violation), 1 (some) and 2 (could not run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferstack.cli.main import main
from tests.conftest import ROOT
from tests.harness import DEPLOYER_ARGS

OPEN_BUCKET = (
    "import pulumi_aws as aws\n"
    'bucket = aws.s3.Bucket("models")\n'
    'aws.s3.BucketPublicAccessBlock("open", bucket=bucket.id, block_public_acls=True, block_public_policy=False,\n'
    "    ignore_public_acls=True, restrict_public_buckets=True)\n"
)


def program(folder: Path, code: str) -> Path:
    (folder / "__main__.py").write_text(code)
    (folder / "Pulumi.test.yaml").write_text("config: {}\n")
    return folder


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_shipped_stacks_pass(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["policy", "check", "--stack", stack, "--stacks-dir", str(ROOT / "stacks"), *DEPLOYER_ARGS]) == 0
    )
    out = capsys.readouterr().out
    assert f"stack {stack}:" in out and f"pack-config/{stack}.json" in out
    assert "0 mandatory violation(s)" in out


def test_a_users_program_with_an_open_bucket_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = program(tmp_path, OPEN_BUCKET)
    assert main(["policy", "check", "--stack", "test", "--stacks-dir", str(stacks)]) == 1
    out = capsys.readouterr().out
    assert "MANDATORY" in out and "s3-public-access-blocked" in out and "BucketPublicAccessBlock open" in out
    assert "s3-tls-only" in out and "Bucket models" in out  # a stack policy, naming the bucket
    assert "2 mandatory violation(s)" in out


def test_json_lists_every_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = program(tmp_path, OPEN_BUCKET)
    assert main(["policy", "check", "--stack", "test", "--stacks-dir", str(stacks), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["stack"] == "test" and report["mandatory"] == 2 and report["advisory"] == 0
    assert report["policies"]["s3-tls-only"] == "mandatory"
    found = {(v["policy"], v["resource"]["type"], v["resource"]["name"]) for v in report["violations"]}
    assert found == {
        ("s3-public-access-blocked", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "open"),
        ("s3-tls-only", "aws:s3/bucket:Bucket", "models"),
    }
    assert all(v["level"] == "mandatory" and v["message"] for v in report["violations"])


def test_the_pack_config_turns_a_violation_advisory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = program(tmp_path, OPEN_BUCKET)
    config = tmp_path / "relaxed.json"
    config.write_text(json.dumps({"all": "advisory"}))
    argv = ["policy", "check", "--stack", "test", "--stacks-dir", str(stacks), "--policy-config", str(config)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0 mandatory violation(s), 2 advisory" in out and "advisory  s3-public-access-blocked" in out


def test_a_program_that_fails_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = program(tmp_path, "raise RuntimeError('the program broke')\n")
    assert main(["policy", "check", "--stack", "test", "--stacks-dir", str(stacks)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inferstack: the policy check could not run") and "the program broke" in err


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--stack", "qa"], "stack"),
        (["--stack", "prod", "--stacks-dir", "/nonexistent"], "--stacks-dir"),
        (["--stack", "prod", "--policy-config", "/nonexistent.json", *DEPLOYER_ARGS], "--policy-config"),
    ],
)
def test_bad_arguments_exit_2(arguments: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    stacks_dir = [] if "--stacks-dir" in arguments else ["--stacks-dir", str(ROOT / "stacks")]
    assert main(["policy", "check", *arguments, *stacks_dir]) == 2
    assert f"not valid for {field}" in capsys.readouterr().err
