"""What a bench run's numbers say: medians over rounds, ratios between contenders, the table, the
report (JSON) with the machine it ran on, and the plot of throughput against p99 latency."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from inferstack.serving.bench.contenders import CEILING, CONTENDERS, PLAIN, TRITON, UNBATCHED, Point


def medians(points: Sequence[Point]) -> list[Point]:
    """Per contender and level, the round with the median throughput (the lower one of an even count)."""
    grouped: dict[tuple[str, int], list[Point]] = {}
    for p in points:
        grouped.setdefault((p.contender, p.concurrency), []).append(p)
    chosen = []
    for rounds in grouped.values():
        ordered = sorted(rounds, key=lambda p: (not p.error, p.throughput))  # failed rounds rank lowest
        chosen.append(ordered[(len(ordered) - 1) // 2])
    return chosen


# --- what the numbers say --------------------------------------------------------------------------------


def ratio(points: Sequence[Point], numerator: str, denominator: str, concurrency: int) -> float:
    """Throughput of one contender over another's at one concurrency (NaN where either has none)."""
    by_key = {(p.contender, p.concurrency): p for p in points}
    a, b = by_key.get((numerator, concurrency)), by_key.get((denominator, concurrency))
    if a is None or b is None or not a.throughput or not b.throughput:
        return math.nan
    return a.throughput / b.throughput


def geometric_mean_ratio(points: Sequence[Point], numerator: str, denominator: str) -> float:
    ratios = [
        ratio(points, numerator, denominator, level) for level in sorted({p.concurrency for p in points})
    ]
    finite = [r for r in ratios if math.isfinite(r) and r > 0]
    return statistics.geometric_mean(finite) if finite else math.nan


def table(points: Sequence[Point]) -> list[list[str]]:
    """One row per point: its numbers, its ratio to the plain app and its share of the ceiling."""
    rows = [
        [
            *("clients", "contender", "req/s", "p50", "p99", "client CPU", "vs plain", "of ceiling"),
            *("per CPU-s", "of ceiling per CPU-s", "note"),
        ]
    ]
    ceilings = {p.concurrency: p.per_cpu_second for p in points if p.contender == CEILING}
    for p in points:
        per_cpu = p.per_cpu_second if p.contender == CEILING else p.server_per_cpu_second
        ceiling = ceilings.get(p.concurrency)
        note = p.error or (ceiling_note(p) if p.contender == CEILING else "")
        rows.append(
            [
                str(p.concurrency),
                p.contender,
                f"{p.throughput:.0f}",
                format_ms(p.p50_ms),
                format_ms(p.p99_ms),
                "-" if p.client_cpu is None else f"{p.client_cpu:.0%}",
                _times(ratio(points, p.contender, PLAIN, p.concurrency)),
                _share(ratio(points, p.contender, CEILING, p.concurrency)),
                "-" if per_cpu is None else f"{per_cpu:.0f}",
                _share(per_cpu / ceiling if per_cpu is not None and ceiling else math.nan),
                note,
            ]
        )
    return rows


def ceiling_note(p: Point) -> str:
    per_cpu = f", {p.per_cpu_second:.0f} per CPU-second" if p.per_cpu_second else ""
    return f"batch {p.batch}, {p.torch_threads} thread(s){per_cpu}"


def format_ms(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _times(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "-"


def _share(value: float) -> str:
    return f"{value:.0%}" if math.isfinite(value) else "-"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }


def report(points: Sequence[Point], *, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    levels = sorted({p.concurrency for p in points})
    return {
        "model": model,
        "machine": machine(),
        "settings": settings,
        "points": [asdict(p) for p in points],
        "ratios": {
            f"{a}/{b}": {str(level): ratio(points, a, b, level) for level in levels}
            for a, b in ((TRITON, PLAIN), (TRITON, UNBATCHED), (TRITON, CEILING), (PLAIN, CEILING))
        },
    }


def plot(points: Sequence[Point], path: Path, *, title: str) -> Path:
    """Throughput against p99 latency, one line per contender through its concurrency levels."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here, nor wanted
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for contender in CONTENDERS:
        mine = sorted(
            (p for p in points if p.contender == contender and p.throughput), key=lambda p: p.concurrency
        )
        if not mine:
            continue
        style = "--" if contender == CEILING else "-"
        label = f"{contender} (p99 of one batch)" if contender == CEILING else contender
        axes.plot([p.throughput for p in mine], [p.p99_ms for p in mine], style, marker="o", label=label)
        for p in mine:
            axes.annotate(
                f"b{p.batch}" if contender == CEILING else str(p.concurrency),
                (p.throughput, p.p99_ms),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    axes.set_xlabel("throughput (requests/s)")
    axes.set_ylabel("p99 latency (ms)")
    axes.set_yscale("log")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.text(0.99, 0.01, "labels: concurrent clients; ceiling: bN = batch of N", ha="right", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
