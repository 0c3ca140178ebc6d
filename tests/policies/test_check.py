"""`inferstack policy check`: the stack's resources through the pack's real Analyzer, with a readable report."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.serving.cli import main
from tests.conftest import ROOT
from tests.harness import DEPLOYER_ARGS


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_shipped_stacks_pass(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["policy", "check", "--stack", stack, "--stacks-dir", str(ROOT / "stacks"), *DEPLOYER_ARGS]) == 0
    )
    out = capsys.readouterr().out
    assert f"stack {stack}:" in out and "0 mandatory violation(s), 0 advisory" in out


def test_a_users_program_with_an_open_bucket_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "__main__.py").write_text(
        "import pulumi_aws as aws\n"
        'aws.s3.BucketPublicAccessBlock("open", bucket="models", block_public_acls=True, block_public_policy=False,\n'
        "    ignore_public_acls=True, restrict_public_buckets=True)\n"
    )
    (tmp_path / "Pulumi.test.yaml").write_text("config: {}\n")
    assert main(["policy", "check", "--stack", "test", "--stacks-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MANDATORY" in out and "s3-public-access-blocked" in out and "BucketPublicAccessBlock open" in out
    assert "1 mandatory violation(s)" in out


@pytest.mark.parametrize(
    ("arguments", "field"),
    [(["--stack", "qa"], "stack"), (["--stack", "prod", "--stacks-dir", "/nonexistent"], "--stacks-dir")],
)
def test_bad_arguments_exit_2(arguments: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "policy",
                "check",
                *arguments,
                *([] if "--stacks-dir" in arguments else ["--stacks-dir", str(ROOT / "stacks")]),
            ]
        )
        == 2
    )
    assert f"not valid for {field}" in capsys.readouterr().err
