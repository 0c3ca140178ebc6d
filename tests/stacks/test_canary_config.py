"""A canary in a stack file: promotion and rollback are edits of ``inferstack:services[i].canary``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import parse_config
from tests.harness import run_invalid, run_program
from tests.stacks.test_stacks import engine_form

DEPLOYABLE = {"cluster": {"publicAccessCidrs": ["198.51.100.7/32"]}}


def platform_with(canary: Any) -> InferencePlatform:
    service = {"name": "ranker", "models": ["ranker"], "prefix": "ranker", "canary": canary}
    return InferencePlatform(
        "inferstack-dev", parse_config(engine_form({**DEPLOYABLE, "services": [service]}))
    )


def split_of(canary: dict[str, Any]) -> dict[str, Any]:
    recording, _ = run_program(lambda: platform_with(canary))
    config_map = recording.one("kubernetes:core/v1:ConfigMap", "ranker-traffic").inputs
    split: dict[str, Any] = json.loads(config_map["data"]["split.json"])
    return split


def test_the_stack_file_sets_the_split_and_rollback_is_an_edit() -> None:
    canary = {
        "model": "ranker",
        "stableVersion": 3,
        "canaryVersion": 4,
        "weightPercent": 10,
        "mirrorPercent": 5,
    }
    assert split_of(canary) == {
        "model": "ranker",
        "stable_version": 3,
        "canary_version": 4,
        "weight_percent": 10,
        "mirror_percent": 5,
    }
    assert split_of({**canary, "weightPercent": 0})["weight_percent"] == 0


@pytest.mark.parametrize(
    ("canary", "field"),
    [
        ({"model": "ranker", "stableVersion": 3}, "inferstack:services[0].canary.canaryVersion"),
        (
            {"model": "ranker", "stableVersion": 3, "canaryVersion": 4, "weight": 5},
            "inferstack:services[0].canary.weight",
        ),
        ("v4", "inferstack:services[0].canary"),
        (
            {"model": "ranker", "stableVersion": 3, "canaryVersion": 4, "weightPercent": 120},
            "inferstack:services[0].canary.weightPercent",
        ),
        ({"model": "search", "stableVersion": 3, "canaryVersion": 4}, "inferstack:services[0].canary.model"),
        (
            {"model": "ranker", "stableVersion": 3, "canaryVersion": 3},
            "inferstack:services[0].canary.canaryVersion",
        ),
    ],
)
def test_a_bad_canary_names_its_stack_key(canary: Any, field: str) -> None:
    recording, error = run_invalid(lambda: platform_with(canary))
    assert error.field == field, error
    assert recording.resources == []
