"""Run the real promtool on rule files written from Python objects."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def check_rules(groups: list[dict[str, Any]], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return run("check", "rules", path)


def check_expressions(expressions: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """Parse PromQL with Prometheus's own parser: each expression as a recording rule."""
    rules = [{"record": f"inferstack:check:{i}", "expr": expr} for i, expr in enumerate(expressions.values())]
    return check_rules([{"name": "expressions", "rules": rules}], folder)


def unit_test_alert(
    groups: list[dict[str, Any]],
    folder: Path,
    *,
    alert: str,
    series: list[dict[str, str]],
    at: str,
    expected: dict[str, str] | None,
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules`: does ``alert`` fire at ``at`` with the labels ``expected`` (None: not at all)?

    Annotations are checked by `promtool check rules`; the unit test compares labels only.
    """
    groups = copy.deepcopy(groups)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": expected}] if expected else [],
                    }
                ],
            }
        ],
    }
    (folder / "test.yml").write_text(yaml.safe_dump(test))
    return run("test", "rules", folder / "test.yml")
