"""Triton's log lines as structured records, with the request id each concerns.

With ``--log-format=ISO8601`` and ``--log-verbose=1`` Triton writes one line per event,
``2026-11-23T16:54:26Z I 30519 infer_request.cc:132] "[request id: req-42] Setting state from
PENDING to EXECUTING"``; a request's lines carry the id the client gave it. `parse_line` turns a line
into a record a log store can index (JSON lines), `request_states` follows each request through its
states, and `triton_log_args` gives the flags that make Triton write them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Re-exported: the flags and the line's pattern are shared with the cluster's Fluent Bit.
from inferstack.components.triton_telemetry import LOG_LINE
from inferstack.components.triton_telemetry import triton_log_args as triton_log_args

_STATE = re.compile(r"Setting state from (?P<old>\w+) to (?P<new>\w+)")
_PREPARED = re.compile(r"model: (?P<model>[^,]+), requested version: [^,]+, actual version: (?P<version>\d+)")
LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "fatal"}


@dataclass(frozen=True)
class LogRecord:
    """One of Triton's log lines, parsed (request id included where Triton wrote one)."""

    time: str
    level: str
    thread: int
    source: str
    message: str
    request_id: str | None = None
    model: str | None = None
    model_version: int | None = None


def parse_line(line: str) -> LogRecord | None:
    """One log line as a record; None for lines that are not Triton log entries (tables, banners)."""
    match = LOG_LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    message = match["message"].replace("\\n", "\n")
    prepared = _PREPARED.search(message)
    return LogRecord(
        time=match["time"],
        level=LEVELS[match["level"]],
        thread=int(match["thread"]),
        source=match["source"],
        message=message,
        request_id=match["request_id"],
        model=prepared["model"] if prepared else None,
        model_version=int(prepared["version"]) if prepared else None,
    )


def parse_lines(lines: Iterable[str]) -> Iterator[LogRecord]:
    for line in lines:
        if (record := parse_line(line)) is not None:
            yield record


def request_states(records: Iterable[LogRecord]) -> dict[str, list[str]]:
    """Request id -> the states it went through, in order (PENDING, EXECUTING, RELEASED, ...)."""
    states: dict[str, list[str]] = {}
    for record in records:
        if record.request_id and (change := _STATE.search(record.message)):
            states.setdefault(record.request_id, []).append(change["new"])
    return states


def write_json_lines(records: Iterable[LogRecord], path: Path) -> int:
    """Records as JSON lines (what Fluent Bit or Loki ingest); returns how many were written."""
    count = 0
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps({k: v for k, v in asdict(record).items() if v is not None}) + "\n")
            count += 1
    return count
