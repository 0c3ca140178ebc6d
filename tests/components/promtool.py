"""Run the real promtool on rule files written from Python objects."""

from __future__ import annotations

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
