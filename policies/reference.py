"""The policy reference, generated from the pack itself: each rule's scope, default level, the level
each stack's pack config sets, what it wants and its settings (the docs site's policy page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inferstack.policies.rule_base import RuleBase
from inferstack.policies.rules import RULES
from inferstack.policies.rules_exposure import EXPOSURE_RULES
from inferstack.policies.rules_failover import FAILOVER_RULES
from inferstack.policies.rules_registries import REGISTRY_RULES
from inferstack.policies.stack_rules import STACK_RULES

PACK_CONFIGS = Path(__file__).with_name("pack-config")


def _stack_levels(rule: RuleBase, configs: dict[str, dict[str, Any]]) -> str:
    levels = []
    for stack, config in sorted(configs.items()):
        given = config.get(rule.name, config.get("all"))
        level = given.get("enforcementLevel") if isinstance(given, dict) else given
        settings = (
            {k: v for k, v in given.items() if k != "enforcementLevel"} if isinstance(given, dict) else {}
        )
        said = [level] if level is not None and level != rule.level else []
        said += [f"{key} {json.dumps(value)}" for key, value in settings.items()]
        if said:
            levels.append(f"{stack}: {', '.join(said)}")
    return "; ".join(levels) or "-"


def _settings(rule: RuleBase) -> str:
    return (
        ", ".join(f"`{key}` ({json.dumps(schema['default'])})" for key, schema in rule.config_schema.items())
        or "-"
    )


def reference_table() -> str:
    """Markdown: one row a policy, with the count of each scope above it."""
    configs = {path.stem: json.loads(path.read_text()) for path in PACK_CONFIGS.glob("*.json")}
    scoped = [("resource", rule) for rule in (*RULES, *FAILOVER_RULES, *REGISTRY_RULES, *EXPOSURE_RULES)] + [
        ("stack", rule) for rule in STACK_RULES
    ]
    resources = sum(1 for scope, _ in scoped if scope == "resource")
    stacks = len(scoped) - resources
    rows = [
        f"{len(scoped)} policies: {resources} look at one resource, {stacks} at the whole stack.",
        "",
        "| policy | scope | default level | per stack | what it wants | settings (default) |",
        "|---|---|---|---|---|---|",
    ]
    rows += [
        f"| `{rule.name}` | {scope} | {rule.level} | {_stack_levels(rule, configs)} | "
        f"{rule.description.replace('|', '/')} | {_settings(rule)} |"
        for scope, rule in scoped
    ]
    return "\n".join(rows)
