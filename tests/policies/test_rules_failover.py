"""The failover rules of the policy pack: each passes the prod-dr stack and fails a broken copy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from inferstack.policies.analyzer import PolicyPackProcess
from inferstack.policies.pack import policies
from inferstack.policies.rules_failover import (
    FAILOVER_RULES,
    RECORD,
    REPLICATION,
    failover_health_checked,
    replication_on,
)
from inferstack.stacks import offline
from tests.stacks.test_failover_stack import STACKS, STANDBY


@pytest.fixture(scope="module")
def standby() -> dict[str, dict[str, Any]]:
    recording = offline.run_stack(STACKS, "prod-dr", STANDBY)
    return {
        REPLICATION: recording.one(REPLICATION).inputs,
        "primary": recording.one(RECORD, "failover-primary").inputs,
        "standby": recording.one(RECORD, "failover-standby").inputs,
    }


def rule0(props: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = props["rules"][0]
    return first


CASES: list[tuple[Callable[[str, Any, Any], list[str]], str, str, Callable[[dict[str, Any]], None], str]] = [
    (replication_on, REPLICATION, REPLICATION, lambda p: rule0(p).update(status="Disabled"), "not 'Enabled'"),
    (replication_on, REPLICATION, REPLICATION, lambda p: rule0(p).pop("sourceSelectionCriteria"), "KMS"),
    (
        replication_on,
        REPLICATION,
        REPLICATION,
        lambda p: rule0(p)["destination"].pop("encryptionConfiguration"),
        "no KMS key",
    ),
    (replication_on, REPLICATION, REPLICATION, lambda p: p.update(rules=[]), "no rules"),
    (failover_health_checked, RECORD, "primary", lambda p: p.pop("healthCheckId"), "PRIMARY"),
    (failover_health_checked, RECORD, "standby", lambda p: p.pop("healthCheckId"), "SECONDARY"),
]


@pytest.mark.parametrize(
    ("rule", "resource_type", "fixture", "change", "expected"),
    CASES,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)],
)
def test_rule_passes_the_stack_and_fails_the_broken_fixture(
    standby: dict[str, dict[str, Any]],
    rule: Callable[[str, Any, Any], list[str]],
    resource_type: str,
    fixture: str,
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    good = standby[fixture]
    assert rule(resource_type, good, {}) == []
    broken = copy.deepcopy(good)
    change(broken)
    problems = rule(resource_type, broken, {})
    assert problems and any(expected in p for p in problems), problems


def test_records_without_failover_and_other_types_are_not_judged(standby: dict[str, dict[str, Any]]) -> None:
    plain = {
        k: v for k, v in standby["primary"].items() if k not in ("failoverRoutingPolicies", "healthCheckId")
    }
    assert failover_health_checked(RECORD, plain, {}) == []
    assert replication_on(RECORD, standby["primary"], {}) == []
    assert failover_health_checked(REPLICATION, standby[REPLICATION], {}) == []


def test_an_alias_that_evaluates_its_target_counts_as_checked(standby: dict[str, dict[str, Any]]) -> None:
    alias = {k: v for k, v in standby["primary"].items() if k != "healthCheckId"}
    alias["aliases"] = [{"name": "x.elb.amazonaws.com", "zoneId": "Z1", "evaluateTargetHealth": True}]
    assert failover_health_checked(RECORD, alias, {}) == []


def test_the_real_analyzer_rejects_a_standby_without_kms_replication(
    standby: dict[str, dict[str, Any]],
) -> None:
    broken = copy.deepcopy(standby[REPLICATION])
    rule0(broken).pop("sourceSelectionCriteria")
    unchecked = {k: v for k, v in standby["primary"].items() if k != "healthCheckId"}
    with PolicyPackProcess() as pack:
        found = pack.analyze(REPLICATION, broken, name="failover-replication") + pack.analyze(
            RECORD, unchecked, name="failover-primary"
        )
    assert {(v.policy, v.mandatory) for v in found} == {
        ("model-replication-on", True),
        ("failover-health-checked", True),
    }


def test_the_pack_carries_both_rules_as_mandatory() -> None:
    names = {p.name: p.enforcement_level for p in policies()}
    for rule in FAILOVER_RULES:
        assert rule.level == "mandatory" and names[rule.name].value == "mandatory"
