"""Property-based: any single value in a stack file either plans (with valid manifests) or is refused
with one line naming its key, before anything is registered."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import parse_config
from inferstack.infra.errors import InvalidInput
from tests.conftest import ROOT
from tests.harness import any_value, run_catching
from tests.schemas import validate_recorded_manifests
from tests.stacks.test_stacks import engine_form


def stack_file(stack: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.removeprefix("inferstack:"): v for k, v in config.items() if k.startswith("inferstack:")}


# The dev stack as its deployer runs it (the deployer's CIDRs are not in the committed file).
BASE = {**stack_file("dev"), "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]}}
PATHS: list[tuple[str | int, ...]] = [
    ("environment",),
    ("capacity",),
    ("gpu", "reserved"),
    ("gpu", "reserved", "instanceType"),
    ("network", "zones"),
    ("network", "nat"),
    ("network", "vpcCidr"),
    ("cluster", "kubernetesVersion"),
    ("cluster", "publicAccessCidrs"),
    ("cluster", "name"),
    ("nodes", "systemInstanceTypes"),
    ("gpu", "instanceType"),
    ("gpu", "maxPerZone"),
    ("gpu", "spotInstanceTypes"),
    ("gpu", "spotMaxPerZone"),
    ("gpu", "minSurvivingShare"),
    ("services",),
    ("services", 0),
    ("services", 0, "name"),
    ("services", 0, "models"),
    ("services", 0, "prefix"),
    ("services", 0, "minReplicas"),
    ("services", 0, "maxReplicas"),
    ("services", 0, "placement"),
    ("services", 0, "queueTimeTargetMs"),
    ("services", 0, "pendingRequestsPerReplica"),
    ("services", 0, "gpuUtilizationTarget"),
    ("services", 0, "repository"),
    ("services", 0, "modelCacheGib"),
    ("services", 0, "expectedRequestBytes"),
    ("services", 0, "expectedRequestsPerSecond"),
    ("services", 0, "frontTimeTargetMs"),
    ("telemetry", "enabled"),
    ("telemetry", "sampleRate"),
    ("telemetry", "logRetentionDays"),
    ("telemetry", "traceRetentionHours"),
]
VALUES = any_value(
    "spot", "single", "prod", "1.35", "10.0.0.0/16", "g5.xlarge", "ranker", "a/b", "karpenter", "odcr"
)


def with_value(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node: Any = raw
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return raw


def key_words(path: tuple[str | int, ...]) -> set[str]:
    """How an error may name the key: its stack-file spelling, or its snake_case field."""
    words = {str(p) for p in path if isinstance(p, str)}
    snake = {"".join(f"_{c.lower()}" if c.isupper() else c for c in w) for w in words}
    return words | snake | {w.replace("_", "") for w in snake}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_a_value_plans_or_is_refused_in_one_line_naming_its_key(
    path: tuple[str | int, ...], value: Any
) -> None:
    raw = with_value(path, value)
    recording, error = run_catching(
        lambda: InferencePlatform("inferstack-dev", parse_config(engine_form(raw)), stack_dir=ROOT / "stacks")
    )
    if error is None:
        validate_recorded_manifests(recording)
        return
    assert isinstance(error, InvalidInput), f"{path}={value!r}: {type(error).__name__}: {error}"
    assert "\n" not in str(error), str(error)
    assert error.field.startswith(("inferstack:", "aws:")), (
        path,
        str(error),
    )  # a stack key, as Pulumi spells it
    if path != ("environment",):  # prod's rules can make another key the one at fault (minReplicas)
        named = error.field.lower().replace("_", "")
        assert any(word.lower().replace("_", "") in named for word in key_words(path)), (path, str(error))
    assert recording.resources == [], f"{path}={value!r} registered {len(recording.resources)} resources"
