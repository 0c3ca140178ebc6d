"""One whole `inferstack bench`: start what it needs, sweep, search if asked, summarise and plot.

Locally it builds (or copies) the repository, adds the model's unbatched twin, starts the local
runtime (moto S3 + Triton) and the plain app, and measures all four contenders; with ``--url`` it
measures a Triton it did not start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.serving.bench.config_search import (
    Candidate,
    Trial,
    best_trial,
    search,
    search_space,
    write_best,
)
from inferstack.serving.bench.contenders import (
    BENCH_MODEL,
    CEILING,
    PLAIN,
    TRITON,
    UNBATCHED,
    UNBATCHED_SUFFIX,
    Endpoints,
    Point,
    add_unbatched_variant,
    build_bench_repository,
    ceiling_batch,
    find_model,
    measure_point,
    parse_concurrency,
    parse_integers,
    sweep,
    variable_shapes,
)
from inferstack.serving.bench.perf_analyzer import Load, PerfAnalyzer
from inferstack.serving.bench.report import (
    ceiling_note,
    format_ms,
    geometric_mean_ratio,
    medians,
    plot,
    report,
)
from inferstack.serving.models.repository import read_repository, to_python_target


@dataclass(frozen=True)
class BenchRequest:
    """Everything one ``inferstack bench`` run is asked for."""

    url: str | None
    repository: Path | None
    model: str | None
    levels: str | Sequence[int]
    window_ms: int
    stability_pct: float
    max_trials: int
    out: Path
    search: bool = False
    p99_ms: float | None = None
    write: bool = False
    rounds: int = 1
    # --search: max batch sizes, queue delays (us), instance counts, torch threads (None: 1 and all cores)
    space: tuple[str, str, str, str | None] = ("8,16,32", "100,2000", "1,2", None)

    def candidates(self) -> list[Candidate]:
        batch, delay, instances, threads = self.space
        return search_space(
            max_batch_sizes=parse_integers(batch, "--search-batch", minimum=1),
            delays_us=parse_integers(delay, "--search-delay-us", minimum=0),
            instances=parse_integers(instances, "--search-instances", minimum=1),
            torch_threads=parse_integers(threads, "--search-threads", minimum=1) if threads else None,
        )

    def level_values(self) -> list[int]:
        return parse_concurrency(self.levels) if isinstance(self.levels, str) else list(self.levels)

    def checked(self) -> BenchRequest:
        """Every field checked before anything starts; ``levels`` parsed."""
        levels = self.level_values()
        Load(self.window_ms, self.stability_pct, self.max_trials).checked()
        if self.url is None and self.repository is None and self.model not in (None, BENCH_MODEL, "demo"):
            raise InvalidInput("--model", self.model, f"{BENCH_MODEL} or demo without --repository")
        if self.url is not None and self.model is None:
            raise InvalidInput("--model", None, "the name of a model the Triton at --url serves")
        if self.url is not None and self.search:
            raise InvalidInput("--search", True, "a local run: the search reloads the model it measures")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or not 1 <= self.rounds <= 9:
            raise InvalidInput("--rounds", self.rounds, "an integer from 1 to 9")
        if self.p99_ms is not None and not self.p99_ms > 0:
            raise InvalidInput("--p99-ms", self.p99_ms, "a positive latency in milliseconds")
        if (self.p99_ms is not None or self.write) and not self.search:
            raise InvalidInput("--p99-ms/--write", True, "only with --search")
        if self.write and self.repository is None:
            raise InvalidInput("--write", True, "a --repository to write the best config into")
        self.candidates()
        return BenchRequest(
            self.url,
            self.repository,
            self.model,
            levels,
            self.window_ms,
            self.stability_pct,
            self.max_trials,
            self.out,
            self.search,
            self.p99_ms,
            self.write,
            self.rounds,
            self.space,
        )


@dataclass(frozen=True)
class BenchResult:
    """What one bench run measured: points, search trials, the JSON report and the summary lines."""

    points: list[Point]
    trials: list[Trial]
    report: dict[str, Any]
    summary: list[str]

    @property
    def failed(self) -> bool:
        return any(p.error for p in self.points)


def run_bench(request: BenchRequest, *, progress: Callable[[str], None]) -> BenchResult:
    """Start what the request needs, sweep, search if asked, and write bench.json and bench.png."""
    import contextlib
    import shutil
    import tempfile

    from inferstack.serving.bench.baseline_server import BaselineServer
    from inferstack.serving.bench.perf_analyzer import find_perf_analyzer
    from inferstack.serving.local.runtime import LocalRuntime

    perf = find_perf_analyzer()
    levels = request.level_values()
    load = Load(request.window_ms, request.stability_pct, request.max_trials).checked()
    trials: list[Trial] = []
    if request.url is not None:
        assert request.model is not None
        model_name = request.model
        points = raw = _remote_sweep(perf, load, request.url, model_name, levels, progress)
    else:
        with contextlib.ExitStack() as running:
            scratch = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="inferstack-bench-")))
            repository = scratch / "repository"
            if request.repository is not None:
                shutil.copytree(request.repository, repository)
            elif request.model == "demo":
                from inferstack.serving.local.demo import build_demo_repository

                build_demo_repository(repository)
            else:
                progress("building the bench model: MLP 256 -> 4096 -> 4096 -> 256")
                build_bench_repository(repository)
            model = find_model(repository, request.model)
            model_name = model.name
            load = replace(load, shapes=variable_shapes(model))
            progress(f"model {model.name}: max_batch_size {model.max_batch_size}")
            unbatched = add_unbatched_variant(repository, model.name)
            runtime = running.enter_context(
                LocalRuntime(repository, progress=lambda m: progress(f"triton: {m}"))
            )
            progress("starting the plain PyTorch app (FastAPI + uvicorn)")
            plain = running.enter_context(BaselineServer(repository, model.name, scratch / "baseline.log"))
            triton_group = next(c.process.pid for c in runtime.children if c.name.startswith("triton"))
            endpoints = Endpoints(runtime.http_url, model.name, unbatched, plain.url, triton_group)
            raw = sweep(
                perf,
                endpoints,
                model,
                load,
                levels=levels,
                rounds=request.rounds,
                progress=lambda p: progress(_progress_line(p)),
            )
            points = medians(raw)
            if request.search:
                # The config Triton serves here: the python backend's, whatever the repository's target.
                served = read_repository(to_python_target(repository, scratch / "served"))
                served_model = next(m for m in served if m.name == model.name)
                trials = search(
                    perf,
                    runtime.http_url,
                    model,
                    served_model.config,
                    request.candidates(),
                    load,
                    admin_headers=runtime.admin_headers,
                    concurrency=max(levels),
                    progress=progress,
                    server_group=triton_group,
                )
    settings = {
        "levels": levels,
        "rounds": request.rounds,
        "window_ms": request.window_ms,
        "stability_pct": request.stability_pct,
        "max_trials": request.max_trials,
        "load_generator": "perf_analyzer 2.51.0, HTTP, synchronous closed-loop clients, random inputs",
    }
    report_data = report(points, model=model_name, settings=settings)
    report_data["rounds"] = [asdict(p) for p in raw]
    summary = _summary(points)
    if request.search:
        best = best_trial(trials, request.p99_ms)
        report_data["search"] = {
            "p99_target_ms": request.p99_ms,
            "concurrency": max(levels),
            "trials": [{**asdict(t.point), **asdict(t.candidate)} for t in trials],
            "best": asdict(best.candidate) if best else None,
        }
        target = f"p99 <= {request.p99_ms:g} ms" if request.p99_ms else "no latency target"
        summary.extend(_search_shares(trials, points, max(levels)))
        if best is None:
            summary.append(f"search: no configuration met {target}")
        else:
            summary.append(
                f"search ({target}, {max(levels)} clients): best {best.candidate.label()}: "
                f"{best.point.throughput:.0f} req/s, p99 {format_ms(best.point.p99_ms)}"
            )
            if request.write and request.repository is not None:
                original = find_model(request.repository, model_name)
                written = write_best(request.repository, original, best.candidate)
                summary.append(f"written to {written}")
    png_path = plot(points, request.out / "bench.png", title=_plot_title(model_name, report_data["machine"]))
    summary.append(f"plot: {png_path}")
    return BenchResult(points, trials, report_data, summary)


def _search_shares(trials: Sequence[Trial], points: Sequence[Point], concurrency: int) -> list[str]:
    """Each trial's share of the sweep's in-process ceiling, where that ceiling ran at the batch the
    trial's clients could form (same max batch), side by side with the served config's own share."""
    ceiling = next((p for p in points if p.contender == CEILING and p.concurrency == concurrency), None)
    if ceiling is None or not ceiling.throughput:
        return []
    lines = []
    for t in trials:
        if ceiling_batch(concurrency, t.candidate.max_batch_size) != ceiling.batch or t.point.error:
            continue
        per_cpu = t.point.server_per_cpu_second
        share = per_cpu / ceiling.per_cpu_second if per_cpu and ceiling.per_cpu_second else math.nan
        lines.append(
            f"search {t.candidate.label():<40} {t.point.throughput / ceiling.throughput:5.0%} of ceiling, "
            + (f"{share:.0%} of its per CPU-second" if math.isfinite(share) else "CPU not counted")
            + f" (batch {ceiling.batch}, {concurrency} clients)"
        )
    return lines


def _remote_sweep(
    perf: PerfAnalyzer,
    load: Load,
    url: str,
    model: str,
    levels: Sequence[int],
    progress: Callable[[str], None],
) -> list[Point]:
    """A Triton we did not start: the model, and its unbatched twin where that is served too."""
    import tritonclient.http as http

    from inferstack.serving.local.processes import RuntimeFailure

    client = http.InferenceServerClient(url.removeprefix("http://"))
    try:
        ready = client.is_model_ready(model)
        twin = f"{model}{UNBATCHED_SUFFIX}"
        served = [(TRITON, model)] + ([(UNBATCHED, twin)] if client.is_model_ready(twin) else [])
    except Exception as error:  # connection refused, DNS, TLS: tritonclient raises them all unwrapped
        raise RuntimeFailure(f"no Triton answering at {url}: {error}") from None
    finally:
        client.close()
    if not ready:
        raise RuntimeFailure(f"model {model!r} is not ready on the Triton at {url}")
    points = []
    for level in levels:
        for contender, name in served:
            points.append(measure_point(perf, load, contender, url, name, level))
            progress(_progress_line(points[-1]))
    return points


def _progress_line(p: Point) -> str:
    cpu = "" if p.client_cpu is None else f"  client CPU {p.client_cpu:.0%}"
    batch = f"  ({ceiling_note(p)})" if p.contender == CEILING else ""
    if p.server_per_cpu_second:
        batch = f"  ({p.server_per_cpu_second:.0f} per server CPU-second)"
    error = f"  ERROR {p.error}" if p.error else ""
    return (
        f"{p.contender:<17} {p.concurrency:>4} clients {p.throughput:8.0f} req/s  "
        f"p50 {format_ms(p.p50_ms):>9}  p99 {format_ms(p.p99_ms):>9}{cpu}{batch}{error}"
    )


def _summary(points: Sequence[Point]) -> list[str]:
    lines = []
    for a, b in ((TRITON, PLAIN), (TRITON, UNBATCHED), (TRITON, CEILING)):
        mean = geometric_mean_ratio(points, a, b)
        if math.isfinite(mean):
            lines.append(f"throughput {a}/{b}, geometric mean over the sweep: {mean:.2f}x")
    return lines


def _plot_title(model: str, machine_info: dict[str, Any]) -> str:
    return f"{model} on {machine_info['cpu']} ({machine_info['cores']} cores), perf_analyzer"
