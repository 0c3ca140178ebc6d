"""The pack's config, read as ``pulumi preview --policy-pack-config FILE`` reads it.

The file is a JSON object: ``"all"`` sets every policy's enforcement level; a policy's name maps to
a level (``"mandatory"``, ``"advisory"``, ``"disabled"``) or to an object with an optional
``enforcementLevel`` and the policy's own properties. As the CLI does, each policy's level is its
default, overridden by ``all``, overridden by its own entry; its properties are its schema's
defaults overlaid with the file's, checked against that schema. One file per stack lives in
``pack-config/<stack>.json`` beside this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from inferstack.infra.errors import InvalidInput
from inferstack.infra.json_input import json_object

LEVELS = ("advisory", "mandatory", "remediate", "disabled")
STACK_CONFIGS = Path(__file__).resolve().parent / "pack-config"


@dataclass(frozen=True)
class PolicyDeclaration:
    """What the pack's ``GetAnalyzerInfo`` says of one policy."""

    name: str
    level: str
    config_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySettings:
    """One policy's level and properties from a pack config."""

    level: str
    properties: dict[str, Any]


def stack_config_path(stack: str) -> Path | None:
    """The shipped pack config of ``stack``, if there is one."""
    path = STACK_CONFIGS / f"{stack}.json"
    return path if path.is_file() else None


def load(path: Path) -> dict[str, Any]:
    return json_object(path, "--policy-config", readable="JSON file", shaped="keyed by policy name or 'all'")


def _level(field_name: str, value: Any) -> str:
    if value not in LEVELS:
        raise InvalidInput(field_name, value, f"one of {', '.join(LEVELS)}")
    return str(value)


def reconcile(declared: list[PolicyDeclaration], given: Mapping[str, Any]) -> dict[str, PolicySettings]:
    """Every declared policy's level and properties under ``given``; unknown names are refused."""
    known = {p.name for p in declared}
    unknown = sorted(set(given) - known - {"all"})
    if unknown:
        raise InvalidInput("policy config", unknown, f"'all' or policy names: {', '.join(sorted(known))}")
    everything = _level("policy config: all", given["all"]) if "all" in given else None
    settings = {}
    for policy in declared:
        entry = given.get(policy.name, {})
        if isinstance(entry, str):
            entry = {"enforcementLevel": entry}
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"policy config: {policy.name}", entry, "a level or an object")
        level = everything or policy.level
        if "enforcementLevel" in entry:
            level = _level(f"policy config: {policy.name}.enforcementLevel", entry["enforcementLevel"])
        schema = dict(policy.config_schema)
        properties = {
            **{k: v["default"] for k, v in schema.items() if "default" in v},
            **{k: v for k, v in entry.items() if k != "enforcementLevel"},
        }
        try:
            jsonschema.validate(
                properties, {"type": "object", "properties": schema, "additionalProperties": False}
            )
        except jsonschema.ValidationError as error:
            allowed = f"properties matching {json.dumps(schema)}" if schema else "no properties"
            raise InvalidInput(
                f"policy config: {policy.name}", properties, f"{allowed} ({error.message})"
            ) from None
        settings[policy.name] = PolicySettings(level, properties)
    return settings
