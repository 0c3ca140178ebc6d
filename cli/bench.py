"""`inferstack bench`: Triton vs Triton without batching vs a plain PyTorch app vs the in-process
ceiling, driven by perf_analyzer; or, with --plan, how `inferstack plan` scales."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from inferstack.cli.options import (
    Config,
    StacksDir,
    repository_option,
    settings,
    writable_folder,
)
from inferstack.cli.output import json_safe, print_table


def bench(
    *,  # by name only: --stacks-dir, further down, takes its default from the option, not the signature
    url: Annotated[
        str | None,
        typer.Option(
            help="a running Triton (e.g. the cluster's, on a GPU node): measure --model there, and "
            "--model-unbatched beside it where served (default: a local Triton and plain app)"
        ),
    ] = None,
    repository: Annotated[Path | None, repository_option("the built-in MLP, or the demo")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="the model to measure (default: the repository's only model; without --repository: "
            "mlp, the compute-bound bench model, or demo, the tiny smoke model)"
        ),
    ] = None,
    concurrency: Annotated[str, typer.Option(help="client counts to sweep, e.g. 1,4,16")] = "1,4,16",
    window_ms: Annotated[int, typer.Option(help="perf_analyzer's measurement window")] = 2000,
    stability: Annotated[float, typer.Option(help="% by which 3 windows in a row may differ")] = 25.0,
    max_trials: Annotated[int, typer.Option(help="windows before a point is unstable")] = 10,
    rounds: Annotated[
        int, typer.Option(help="runs per level, alternating order; the median is reported")
    ] = 1,
    out: Annotated[Path, typer.Option(help="where bench.json and bench.png go")] = Path("out/bench"),
    as_json: Annotated[
        bool, typer.Option("--json", help="print the report as JSON (progress to stderr)")
    ] = False,
    search: Annotated[
        bool,
        typer.Option(
            "--search",
            help="search max_batch_size x max_queue_delay x instances x torch threads at the top concurrency",
        ),
    ] = False,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="instead: time and peak memory of `inferstack plan` for stacks of --plan-sizes services",
        ),
    ] = False,
    plan_sizes: Annotated[str, typer.Option(help="--plan: service counts")] = "1,10,100",
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start",
            help="instead: a replica's ready time for a generated --size-mb model, from S3 directly, through "
            "the node cache cold and warm, against the floor (parallel download + torch.jit.load)",
        ),
    ] = False,
    size_mb: Annotated[int, typer.Option(help="--cold-start: the generated model's size")] = 512,
    front: Annotated[
        bool,
        typer.Option(
            "--front",
            help="instead: the request front's CPU per request (the real nginx and njs before a local "
            "Triton) at 1 KB, 1 MB and 10 MB JSON bodies and the same tensors as binary bodies",
        ),
    ] = False,
    stacks_dir: StacksDir,
    config: Config = None,
    p99_ms: Annotated[
        float | None, typer.Option(help="--search: the p99 latency the best config must meet")
    ] = None,
    search_batch: Annotated[str, typer.Option(help="--search: max_batch_size values")] = "8,16,32",
    search_delay_us: Annotated[str, typer.Option(help="--search: max_queue_delay values")] = "100,2000",
    search_instances: Annotated[str, typer.Option(help="--search: instance counts")] = "1,2",
    search_threads: Annotated[
        str | None, typer.Option(help="--search: torch threads per instance (default: 1 and all cores)")
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="--search: write the best config into --repository")
    ] = False,
) -> int:
    """Triton vs Triton without batching vs a plain PyTorch app vs the in-process ceiling, driven by
    perf_analyzer."""
    from inferstack.serving.bench.report import table
    from inferstack.serving.bench.run import BenchRequest, run_bench

    if plan:
        return _bench_plan(stacks_dir, plan_sizes, config, as_json)
    if cold_start:
        return _bench_cold_start(size_mb, rounds, out, as_json)
    if front:
        return _bench_front(rounds, as_json)
    request = BenchRequest(
        url=url,
        repository=repository,
        model=model,
        levels=concurrency,
        window_ms=window_ms,
        stability_pct=stability,
        max_trials=max_trials,
        out=out,
        search=search,
        p99_ms=p99_ms,
        write=write,
        rounds=rounds,
        space=(search_batch, search_delay_us, search_instances, search_threads),
    ).checked()
    writable_folder(request.out, "--out")
    progress = sys.stderr if as_json else sys.stdout

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=progress, flush=True)

    result = run_bench(request, progress=say)
    json_path = request.out / "bench.json"
    json_path.write_text(json.dumps(json_safe(result.report), indent=2, allow_nan=False) + "\n")
    say(f"report: {json_path}")
    if as_json:
        print(json.dumps(json_safe(result.report), indent=2, allow_nan=False))
    else:
        print()
        print_table(table(result.points))
        for line in result.summary:
            print(line)
    return 1 if result.failed else 0


def _bench_cold_start(size_mb: int, rounds: int, out: Path, as_json: bool) -> int:
    from inferstack.serving.bench.cold_start import TARGET_RATIO, run_cold_start, table, write_plot

    progress = sys.stderr if as_json else sys.stdout

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=progress, flush=True)

    report = run_cold_start(size_mb=size_mb, rounds=rounds, progress=say)
    summary = {
        "size_bytes": report.size_bytes,
        "rounds": report.rounds,
        "rows": report.rows(),
        "floor_s": report.floor_s,
        "floor_download_s": report.floor_download_s,
        "floor_load_s": report.floor_load_s,
        "starts": [asdict(s) for s in report.starts],
        "cold_within_target": report.cold_within_target,
        "warm_downloads_nothing": report.warm_downloads_nothing,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold-start.json").write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    plot = write_plot(report, out / "cold-start.png")
    if as_json:
        print(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    else:
        print()
        print_table(table(report))
        print(
            f"\ncold start through the cache: {report.share('cold') / report.floor_s:.2f}x the floor "
            f"(target <= {TARGET_RATIO}x: {'met' if report.cold_within_target else 'NOT met'}); warm start "
            f"{'downloaded nothing' if report.warm_downloads_nothing else 'DOWNLOADED'}; plot: {plot}"
        )
    return 0 if report.cold_within_target and report.warm_downloads_nothing else 1


def _bench_front(rounds: int, as_json: bool) -> int:
    from inferstack.serving.bench.front_cost import report, run_front_bench

    progress = sys.stderr if as_json else sys.stdout
    costs = run_front_bench(
        rounds=max(rounds, 2), progress=lambda line: print(line, file=progress, flush=True)
    )
    if as_json:
        print(json.dumps([asdict(cost) for cost in costs], indent=2))
    else:
        print("\n".join(report(costs)))
    return 0


def _bench_plan(stacks_dir: Path, plan_sizes: str, config: list[str] | None, as_json: bool) -> int:
    from inferstack.cli.plan_benchmark import is_linear, marginal_seconds, plan_benchmark
    from inferstack.serving.bench.contenders import parse_concurrency

    sizes = parse_concurrency(plan_sizes.replace(" ", ""), field="--plan-sizes", maximum=1000)
    runs = plan_benchmark(
        stacks_dir,
        sizes=sizes,
        settings=settings(config),
        progress=lambda r: print(
            f"  {r.services:>4} services: {r.resources} resources, {r.seconds:.1f} s, "
            f"peak {r.peak_rss_mb:.0f} MB",
            file=sys.stderr if as_json else sys.stdout,
            flush=True,
        ),
    )
    steps = marginal_seconds(runs)
    linear = is_linear(runs)
    if as_json:
        summary = {"runs": [asdict(r) for r in runs], "seconds_per_added_service": steps, "linear": linear}
        print(json.dumps(summary, indent=2))
    else:
        print()
        print_table(
            [["services", "resources", "seconds", "peak RSS"]]
            + [
                [str(r.services), str(r.resources), f"{r.seconds:.1f}", f"{r.peak_rss_mb:.0f} MB"]
                for r in runs
            ]
        )
        print(
            "\nseconds per added service: "
            + ", ".join(f"{s:.3f}" for s in steps)
            + f" -> {'linear' if linear else 'NOT linear'}"
        )
    return 0 if linear else 1
