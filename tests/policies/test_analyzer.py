"""Every policy through the pack's real Analyzer (a gRPC server started as the Pulumi CLI starts it).

Each policy's fail fixture must come back as a violation from ``Analyze`` (resource policies) or
``AnalyzeStack`` (stack policies), and its pass fixture must not; levels come from the pack config
sent through ``Configure``, as ``pulumi preview --policy-pack-config`` sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inferstack.infra.errors import InvalidInput
from inferstack.policies.analyzer import PolicyPackProcess, Violation
from inferstack.policies.pack_config import load, stack_config_path
from inferstack.policies.rules import RULES
from inferstack.policies.rules_exposure import EXPOSURE_RULES
from inferstack.policies.rules_failover import FAILOVER_RULES
from inferstack.policies.rules_registries import REGISTRY_RULES
from inferstack.policies.stack_rules import STACK_RULES
from inferstack.stacks import offline
from inferstack.stacks.offline import Recorded
from tests.conftest import ROOT
from tests.harness import DEPLOYER, run_stack
from tests.policies.fixtures import CASES, Case, Stack

STACK_POLICIES = {r.name for r in STACK_RULES}


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackProcess]:
    with PolicyPackProcess() as running:
        yield running


@pytest.fixture(scope="module")
def prod() -> list[Recorded]:
    return run_stack(ROOT / "stacks", "prod").resources


def violations_of(pack: PolicyPackProcess, policy: str, stack: Stack) -> list[Violation]:
    if policy in STACK_POLICIES:
        found = pack.analyze_stack(stack)
    else:
        found = [v for r in stack for v in pack.analyze(r.type, r.inputs, name=r.name, urn=r.urn)]
    return [v for v in found if v.policy == policy]


def test_the_pack_serves_every_rule_with_its_level(pack: PolicyPackProcess) -> None:
    declared = {p.name: p.level for p in pack.declarations()}
    assert declared == {
        r.name: r.level for r in (*RULES, *FAILOVER_RULES, *REGISTRY_RULES, *EXPOSURE_RULES, *STACK_RULES)
    }
    assert len(declared) >= 15


def test_every_policy_has_a_fail_fixture() -> None:
    """The failover rules' fixtures come from the prod-dr stack, in test_rules_failover.py."""
    assert {c.policy for c in CASES} == {r.name for r in (*RULES, *REGISTRY_RULES, *STACK_RULES)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_fires_through_the_analyzer(pack: PolicyPackProcess, prod: list[Recorded], case: Case) -> None:
    levels = pack.configure(case.config)
    assert levels[case.policy] != "disabled"
    good = case.good(prod)
    assert violations_of(pack, case.policy, good) == []
    found = violations_of(pack, case.policy, case.fail(good))
    assert found and any(case.expected in v.reason for v in found), found
    assert all(v.mandatory == (levels[case.policy] == "mandatory") for v in found)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_passes_under_its_pack_config(pack: PolicyPackProcess, stack: str) -> None:
    config = stack_config_path(stack)
    assert config is not None
    pack.configure(load(config))
    recording = run_stack(ROOT / "stacks", stack)
    violations = [v for r in recording for v in pack.analyze(r.type, r.inputs, name=r.name, urn=r.urn)]
    violations += pack.analyze_stack(recording)
    assert violations == []  # advisory ones too: the stacks are meant to be clean


def test_the_pack_config_sets_levels_and_properties(pack: PolicyPackProcess, prod: list[Recorded]) -> None:
    levels = pack.configure({"all": "advisory", "gpu-capacity": {"enforcementLevel": "disabled"}})
    assert set(levels.values()) == {"advisory", "disabled"} and levels["gpu-capacity"] == "disabled"
    pack.configure({"zones": {"minimum": 4}})
    (violation,) = violations_of(pack, "zones", prod)
    assert violation.mandatory and "at least 4" in violation.reason
    pack.configure({})
    assert violations_of(pack, "zones", prod) == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"zone": {"minimum": 3}}, "policy config"),
        ({"zones": "strict"}, "policy config: zones.enforcementLevel"),
        ({"zones": {"minimum": "three"}}, "policy config: zones"),
        ({"zones": {"maximum": 3}}, "policy config: zones"),
    ],
)
def test_a_bad_pack_config_names_the_policy(
    pack: PolicyPackProcess, config: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        pack.configure(config)
    assert caught.value.field == field


def test_the_shipped_pack_configs_are_valid(pack: PolicyPackProcess) -> None:
    for stack in ("dev", "staging", "prod", "prod-dr"):
        path = stack_config_path(stack)
        assert path is not None
        pack.configure(load(path))
    assert stack_config_path("qa") is None


def test_a_hundred_services_on_the_default_node_groups_are_refused(
    pack: PolicyPackProcess, tmp_path: Path
) -> None:
    """The stack program with 100 services and no GPU settings: 3 zones x (4 on-demand + 6 spot) GPUs."""
    for program in (ROOT / "stacks").glob("*.py"):
        (tmp_path / program.name).symlink_to(program)
    services = [{"name": f"svc{i:03d}", "models": ["m"], "prefix": f"svc{i:03d}"} for i in range(100)]
    config = {"aws:region": "us-east-1", "inferstack:environment": "staging", "inferstack:services": services}
    (tmp_path / "Pulumi.big.yaml").write_text(yaml.safe_dump({"config": config}))
    pack.configure({})
    recording = offline.run_stack(tmp_path, "big", DEPLOYER)
    found = [v.reason for v in pack.analyze_stack(recording) if v.policy == "gpu-capacity"]
    assert found == [
        "100 GPU service(s) need 300 GPUs at their minimum replicas, but losing us-east-1a (10 GPUs) "
        "leaves 20 of the node groups' 30 at maximum size",
        "100 GPU service(s) scale to 1200 GPUs at their maximum replicas, but the GPU node groups reach only 30",
    ]
