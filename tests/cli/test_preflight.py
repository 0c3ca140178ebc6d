"""`inferstack preflight -s STACK`: the committed stacks checked against moto's AWS (see
tests/infra/test_preflight.py for which calls moto answers and which the test answers)."""

from __future__ import annotations

import json

import boto3
import pytest

from inferstack.cli import preflight as command
from inferstack.cli.main import main
from inferstack.infra.aws_identity import AwsIdentity
from tests.harness import DEPLOYER_ARGS
from tests.infra.test_preflight import REGION, Account, aws, ready_account
from tests.stacks.test_failover_stack import ENDPOINTS

__all__ = ["aws"]  # the fixture, used by name


def preflight(stack: str, *flags: str, settings: dict[str, str] | None = None) -> int:
    """`inferstack preflight -s STACK` as the deployer runs it, with ``flags`` and ``-c KEY=VALUE`` each."""
    given = [arg for key, value in (settings or {}).items() for arg in ("-c", f"{key}={value}")]
    return main(["preflight", "-s", stack, *flags, *DEPLOYER_ARGS, *given])


@pytest.fixture
def account(aws: None, monkeypatch: pytest.MonkeyPatch) -> Account:
    found = ready_account()
    monkeypatch.setattr(command, "session_clients", lambda identity, region: found.clients(region))
    return found


def test_prod_passes_on_a_ready_account_and_prints_a_table(
    account: Account, capsys: pytest.CaptureFixture[str]
) -> None:
    assert preflight("prod") == 0
    out = capsys.readouterr().out
    assert "stack prod: preflight in us-east-1" in out
    header, rule, *rows = out.split("\n\n")[1].splitlines()
    assert header.split() == ["check", "verdict", "reason", "fix"] and set(rule.replace(" ", "")) == {"-"}
    assert rows and all(row.split()[0] and " pass " in row for row in rows), rows
    assert any("quota L-DB2E81BA" in row for row in rows)
    assert "0 failed" in out


def test_json_and_exit_codes_as_policy_check(account: Account, capsys: pytest.CaptureFixture[str]) -> None:
    account.applied_quotas["L-DB2E81BA"] = 4  # prod starts 3 g5.xlarge: 12 vCPUs
    assert preflight("prod", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["stack"] == "prod" and report["region"] == "us-east-1" and report["failed"] == 1
    (failed,) = [c for c in report["checks"] if c["verdict"] == "fail"]
    assert failed["name"] == "quota L-DB2E81BA" and failed["fix"].startswith("aws service-quotas")


def test_the_standby_checks_its_hosted_zone(account: Account, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        preflight("prod-dr", "--json", settings={"inferstack:failover.zone": "example.net", **ENDPOINTS}) == 1
    )
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["hosted zone example.net"]["verdict"] == "fail"
    assert checks["zones"]["reason"].startswith("us-west-2a")  # the standby's own region


def test_without_credentials_the_checks_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup either
    assert preflight("dev") == 2
    assert "preflight could not run" in capsys.readouterr().err


def test_the_checks_run_as_the_stacks_role(aws: None) -> None:
    """The same identity the provider and the kubeconfig use: the role, assumed from the base credentials."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    role = boto3.client("iam").create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps(trust))
    clients = command.session_clients(AwsIdentity(role_arn=role["Role"]["Arn"]), REGION)
    caller = clients("sts").get_caller_identity()["Arn"]
    assert caller.endswith(":assumed-role/deployer/inferstack-preflight")


def test_bad_stack_settings_stop_before_any_aws_call(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert preflight("prod", settings={"aws:assumeRoles": '[{"roleArn": "a"}, {"roleArn": "b"}]'}) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not valid for aws:assumeRoles" in line
