"""How `inferstack plan` scales: wall time and peak memory for stacks of 1, 10, 100 model services.

Each size is a copy of a stack file (``dev`` by default) whose ``inferstack:services`` list holds N
services, planned by the real command in its own process (the program, the mock monitor and the
manifest writer, as a user runs them), which reports its own peak RSS (VmHWM) as it exits. Growth is
judged on the marginal cost per service between consecutive sizes: linear when it does not rise.
Each size runs a few times and the fastest counts, since a busy machine only ever adds time.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from inferstack.infra.errors import InvalidInput

LINEAR_SLACK = 2.0  # a later step may cost up to this many times the earlier one per service (noise)


@dataclass(frozen=True)
class PlanRun:
    """One timed plan: how many services, how long, peak memory, resources registered."""

    services: int
    seconds: float
    peak_rss_mb: float
    resources: int


def with_services(config: dict[str, Any], count: int) -> dict[str, Any]:
    """The stack config with ``count`` services, each a copy of its first one under its own name (and
    its models: a model's name need only be unique within a service, and a shipped repository has the
    template's models, which every copy ships into its own prefix)."""
    values = dict(config["config"])
    services = values.get("inferstack:services") or []
    if not services:
        raise InvalidInput("inferstack:services", services, "a stack file with at least one service to copy")
    template = services[0]
    values["inferstack:services"] = [
        {**template, "name": f"svc{i}", "prefix": f"svc{i}"} for i in range(count)
    ]
    return {**config, "config": values}


def marginal_seconds(runs: Sequence[PlanRun]) -> list[float]:
    """Seconds per added service between consecutive sizes."""
    ordered = sorted(runs, key=lambda r: r.services)
    return [(b.seconds - a.seconds) / (b.services - a.services) for a, b in itertools.pairwise(ordered)]


def is_linear(runs: Sequence[PlanRun]) -> bool:
    """No step costs more per service than ``LINEAR_SLACK`` times the mean of the steps before it."""
    steps = marginal_seconds(runs)
    return all(
        later <= LINEAR_SLACK * max(statistics.fmean(steps[:i]), 1e-3) for i, later in enumerate(steps) if i
    )


# The child reports its own high-water RSS (VmHWM, of the memory it has after exec): the kernel's
# ru_maxrss for a child also counts the parent's memory at fork, which would hide the plan's own.
_PLAN_AND_REPORT = """
import sys
from inferstack.cli.main import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("\\npeak_rss_kib=" + peak.split()[1], flush=True)
sys.exit(code)
"""


def run_plan(stacks_dir: Path, stack: str, out: Path, settings: Mapping[str, str] | None = None) -> PlanRun:
    argv = [sys.executable, "-c", _PLAN_AND_REPORT, "plan", "--stack", stack]
    argv += ["--stacks-dir", str(stacks_dir), "--out", str(out)]
    argv += [arg for key, value in (settings or {}).items() for arg in ("-c", f"{key}={value}")]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"inferstack plan --stack {stack} failed:\n{output[-2000:]}")
    lines = done.stdout.splitlines()
    resources = int(lines[0].split(":")[1].split()[0]) if "resources to create" in lines[0] else 0
    peak_kib = int(next(line for line in lines if line.startswith("peak_rss_kib=")).split("=")[1])
    return PlanRun(0, seconds, peak_kib / 1024, resources)


def plan_benchmark(
    stacks_dir: Path,
    *,
    sizes: Sequence[int] = (1, 10, 100),
    base_stack: str = "dev",
    repeats: int = 3,
    progress: Callable[[PlanRun], None] | None = None,
    settings: Mapping[str, str] | None = None,
) -> list[PlanRun]:
    """Each size planned ``repeats`` times; the fastest run counts (noise only ever adds time).

    ``settings`` are the deployer's own (``-c`` of `inferstack plan`), such as the API endpoint's CIDRs.
    """
    source = stacks_dir / f"Pulumi.{base_stack}.yaml"
    if not source.is_file():
        raise InvalidInput("--stack", base_stack, f"a stack with a Pulumi.<stack>.yaml in {stacks_dir}")
    if any(n < 1 for n in sizes) or len(set(sizes)) != len(sizes) or len(sizes) < 2:
        raise InvalidInput("sizes", list(sizes), "two or more different service counts, each >= 1")
    config = yaml.safe_load(source.read_text())
    runs = []
    with tempfile.TemporaryDirectory(prefix="inferstack-plan-bench-") as scratch:
        program = Path(scratch) / "stacks"
        shutil.copytree(stacks_dir, program, ignore=shutil.ignore_patterns("__pycache__", "Pulumi.*.yaml"))
        for count in sorted(sizes):
            stack = f"bench{count}"
            (program / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(with_services(config, count)))
            tries = [run_plan(program, stack, Path(scratch) / "out", settings) for _ in range(repeats)]
            fastest = min(tries, key=lambda r: r.seconds)
            run = PlanRun(count, fastest.seconds, max(r.peak_rss_mb for r in tries), fastest.resources)
            runs.append(run)
            if progress:
                progress(run)
    return runs
