"""How the CLI prints: rich tables and colour on a terminal, plain aligned text when piped.

Tests, CI logs and ``| grep`` get the plain form: one line per row, no box characters, no escapes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Cells that carry a verdict are coloured on a terminal.
_VERDICT_STYLES = {
    "ok": "green",
    "ERROR": "bold red",
    "MANDATORY": "bold red",
    "advisory": "yellow",
    "pass": "green",
    "warn": "yellow",
    "FAIL": "bold red",
}


def _console(*, stderr: bool = False) -> Console:
    # Made per call: the console then writes to whatever sys.stdout/sys.stderr is at that moment.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """``rows[0]`` is the header."""
    console = _console()
    if console.is_terminal:
        table = Table(*rows[0], box=box.SIMPLE_HEAD, header_style="bold")
        for row in rows[1:]:
            # Text, not markup: cells hold model names, URLs and messages that may contain brackets.
            table.add_row(*(Text(cell, style=_VERDICT_STYLES.get(cell, "")) for cell in row))
        console.print(table)
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))


def error(message: str) -> None:
    """``inferstack: message`` on stderr, the prefix in red on a terminal; always one line per line."""
    console = _console(stderr=True)
    if console.is_terminal:
        console.print(Text("inferstack: ", style="bold red") + Text(message))
    else:
        print(f"inferstack: {message}", file=sys.stderr)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None: strict JSON has no Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def brief_error(error: str) -> str:
    """A long error's first and last lines: a TorchScript traceback's middle stays in --json."""
    lines = [line.strip() for line in error.splitlines() if line.strip(" )")]
    return " ... ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else error.strip()
