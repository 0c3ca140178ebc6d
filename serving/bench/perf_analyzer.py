"""Triton's own load generator, perf_analyzer (C++), run at one concurrency and read back from its CSV.

``.ci/bootstrap`` extracts the binary from the tritonclient 2.51.0 wheel into ``.venv/opt/perf_analyzer``
with the ``libcudart.so.12`` it links (it loads it even on CPU); that library goes on LD_LIBRARY_PATH for
perf_analyzer alone. Each point uses perf_analyzer's stable-window method: windows of ``window_ms`` are
repeated until three in a row agree within ``stability_pct`` on throughput and average latency, or
``max_trials`` windows have run; perf_analyzer then writes no numbers, and the point is retried once
with windows twice as long before it is reported as unstable.
"""

from __future__ import annotations

import csv
import io
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from inferstack.infra.errors import InvalidInput
from inferstack.serving.local.processes import RuntimeFailure

INSTALL_HINT = "run `bash .ci/bootstrap` (it extracts perf_analyzer 2.51.0 into .venv/opt/perf_analyzer)"
_UNSTABLE = "Failed to obtain stable measurement"


class PerfAnalyzerMissing(RuntimeFailure):
    """perf_analyzer, or a library it needs, is not installed here."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The extracted perf_analyzer binary and the libraries it needs on its library path."""

    binary: Path
    libraries: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(self.libraries), env.get("LD_LIBRARY_PATH")])
        )
        return env


def find_perf_analyzer(root: Path | None = None) -> PerfAnalyzer:
    """The extracted perf_analyzer (``root`` defaults to ``<venv>/opt/perf_analyzer``), checked to start."""
    root = root or Path(sys.prefix) / "opt" / "perf_analyzer"
    found = PerfAnalyzer(root / "perf_analyzer", root / "lib")
    if not found.binary.is_file() or not (found.libraries / "libcudart.so.12").is_file():
        raise PerfAnalyzerMissing(f"perf_analyzer not found in {root}; {INSTALL_HINT}")
    probe = subprocess.run(
        [str(found.binary), "--version"], env=found.env(), capture_output=True, text=True, timeout=30
    )
    if "Perf Analyzer Version" not in probe.stdout + probe.stderr:  # --version exits 1 when it works
        # The usual cause: libb64.so.0d (Debian's libb64-0d) is missing.
        raise PerfAnalyzerMissing(
            f"perf_analyzer in {root} does not start: {(probe.stderr or probe.stdout).strip()}; "
            + INSTALL_HINT
        )
    return found


@dataclass(frozen=True)
class Measurement:
    """One stable (or the last unstable) window at one concurrency, as perf_analyzer's CSV reports it."""

    concurrency: int
    throughput: float  # inferences per second
    p50_ms: float
    p99_ms: float
    server_queue_ms: float | None  # None where the server reports no statistics
    server_compute_ms: float | None
    client_cpu: float  # perf_analyzer's CPU time over the run's wall time x cores: 1.0 = the whole machine
    stable: bool
    error: str = ""


def parse_csv(text: str) -> list[dict[str, float]]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency, the latency columns in microseconds.

    Only the first table is read: with ``--collect-metrics`` a second one follows a blank line.
    """
    table = text.strip().split("\n\n", 1)[0]
    rows = list(csv.DictReader(io.StringIO(table)))
    if not rows or "Inferences/Second" not in rows[0]:
        raise ValueError(f"not a perf_analyzer CSV export: {text[:200]!r}")
    return [{key: float(value) for key, value in row.items() if value not in ("", None)} for row in rows]


def measurement_from_row(
    row: Mapping[str, float], *, client_cpu: float, stable: bool, server_stats: bool, error: str = ""
) -> Measurement:
    ms = 1e-3
    compute = sum(
        row.get(column, 0.0)
        for column in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
    )
    return Measurement(
        concurrency=int(row["Concurrency"]),
        throughput=row["Inferences/Second"],
        p50_ms=row["p50 latency"] * ms,
        p99_ms=row["p99 latency"] * ms,
        server_queue_ms=row.get("Server Queue", 0.0) * ms if server_stats else None,
        server_compute_ms=compute * ms if server_stats else None,
        client_cpu=client_cpu,
        stable=stable,
        error=error,
    )


@dataclass(frozen=True)
class Load:
    """How each point is measured: perf_analyzer's stable-window settings and the variable-axis shapes."""

    window_ms: int
    stability_pct: float
    max_trials: int
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)  # inputs with variable axes

    def checked(self) -> Load:
        window, trials = self.window_ms, self.max_trials
        if isinstance(window, bool) or not isinstance(window, int) or not 100 <= window <= 600_000:
            raise InvalidInput("--window-ms", window, "an integer from 100 to 600000 milliseconds")
        if not 1 <= self.stability_pct <= 100:
            raise InvalidInput("--stability", self.stability_pct, "a percentage from 1 to 100")
        if isinstance(trials, bool) or not isinstance(trials, int) or not 3 <= trials <= 100:
            raise InvalidInput("--max-trials", trials, "an integer from 3 to 100 (three windows must agree)")
        return self


def perf_analyzer_argv(
    install: PerfAnalyzer, load: Load, *, url: str, model: str, concurrency: int, csv_path: Path
) -> list[str]:
    """Closed-loop synchronous clients (one thread each), random inputs.

    Stabilised on throughput and average latency (perf_analyzer's default): a p99 from a window of a
    few hundred requests swings too much on a shared machine to ever agree three times in a row.
    The CSV reports p50 to p99 either way.
    """
    return [
        str(install.binary),
        "-m",
        model,
        "-u",
        url.removeprefix("http://"),
        "-i",
        "http",
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-mode",
        "time_windows",
        "-p",
        str(load.window_ms),
        "-s",
        f"{load.stability_pct:g}",
        "--max-trials",
        str(load.max_trials),
        "--input-data",
        "random",
        *(f"--shape={name}:{','.join(map(str, dims))}" for name, dims in load.shapes.items()),
        "-f",
        str(csv_path),
    ]


def measure(
    install: PerfAnalyzer, load: Load, *, url: str, model: str, concurrency: int, server_stats: bool = True
) -> Measurement:
    """One point; an unstable one (perf_analyzer then writes no numbers) is retried once with windows twice
    as long, as perf_analyzer itself advises. perf_analyzer's own CPU use comes from the kernel (wait4)."""
    load.checked()
    for attempt in (load, replace(load, window_ms=2 * load.window_ms)):
        with tempfile.TemporaryDirectory(prefix="inferstack-perf-") as scratch:
            csv_path = Path(scratch) / "point.csv"
            argv = perf_analyzer_argv(
                install, attempt, url=url, model=model, concurrency=concurrency, csv_path=csv_path
            )
            # Bounded: at most max_trials windows run; the margin covers start-up and a slow machine.
            timeout_s = (attempt.max_trials + 2) * attempt.window_ms / 1000 * 4 + 60
            code, output, cpu = _run(argv, install.env(), timeout_s=timeout_s)
            rows = parse_csv(csv_path.read_text()) if code == 0 and csv_path.exists() else []
        if rows:
            return measurement_from_row(rows[0], client_cpu=cpu, stable=True, server_stats=server_stats)
        if _UNSTABLE not in output:
            break
    stable = _UNSTABLE not in output
    error = f"no stable window within {load.stability_pct:g} %" if not stable else _error_lines(output, code)
    return Measurement(concurrency, 0.0, math.nan, math.nan, None, None, cpu, stable, error)


def _run(argv: list[str], env: dict[str, str], *, timeout_s: float) -> tuple[int, str, float]:
    """Exit code, output, and the child's CPU time over its wall time x cores (1.0: the whole machine)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        status, usage = _wait4(process, started + timeout_s)
        wall = time.monotonic() - started
        log.seek(0)
        output = log.read().decode(errors="replace")
    cpu = (usage.ru_utime + usage.ru_stime) / (wall * (os.cpu_count() or 1)) if wall else 0.0
    return os.waitstatus_to_exitcode(status), output, cpu


def _wait4(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, resource.struct_rusage]:
    """Reap the child ourselves: wait4 returns its resource usage, which Popen.wait drops."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if not pid and time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        time.sleep(0.05)


def _error_lines(output: str, code: int) -> str:
    lines = [
        line.strip() for line in output.splitlines() if "error" in line.lower() or "failed" in line.lower()
    ]
    return f"perf_analyzer exited with {code}: " + (" | ".join(lines[-3:]) or output.strip()[-300:])
