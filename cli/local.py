"""`inferstack local up`: the embedded runtime, emulated S3 and the real Triton on loopback."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferstack.cli import interrupt
from inferstack.cli.options import repository_option, writable_folder
from inferstack.cli.output import brief_error, json_safe, print_table
from inferstack.infra.errors import InvalidInput

if TYPE_CHECKING:  # imported inside the command: `inferstack --help` must not load torch
    from inferstack.components.canary import CanaryRelease
    from inferstack.serving.client.traffic_split import CanaryRun
    from inferstack.serving.local.prometheus import LocalPrometheus
    from inferstack.serving.local.runtime import LocalRuntime
    from inferstack.serving.local.tracing import SpanReceiver
    from inferstack.serving.models.specs import RepositoryModel

app = typer.Typer(no_args_is_help=True, help="the embedded runtime: emulated S3 + real Triton on loopback")

# Options that take a value or stand alone (`--trace` alone: 5 requests); the CLI's main sets them.
OPTIONAL_VALUES = {"trace": 5, "canary": "demo:1:2"}


def _loopback_port(serving: str) -> Any:
    """The option for the port ``serving`` listens on; not given, the runtime picks a free one."""
    return typer.Option(help=f"{serving} on 127.0.0.1 (default: a free port)")


@app.command()
def up(
    repository: Annotated[Path | None, repository_option("build the demo model")] = None,
    once: Annotated[
        bool, typer.Option("--once", help="exit after the smoke inference (0 on success)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a machine-readable summary")] = False,
    work_dir: Annotated[
        Path | None, typer.Option(help="where logs and the served copy go (default: a temp folder)")
    ] = None,
    trace: Annotated[
        int,
        typer.Option(
            metavar="[N]",
            help="after the smoke, send N requests (default 5) with a W3C traceparent and request id: print "
            "where each one's time went from Triton's OpenTelemetry spans, and write Triton's log lines as "
            "records (triton-0.jsonl in the work folder)",
        ),
    ] = 0,
    no_prometheus: Annotated[
        bool,
        typer.Option(
            "--no-prometheus",
            help="skip the local Prometheus (used by default when the prometheus binary is installed)",
        ),
    ] = False,
    replicas: Annotated[
        int, typer.Option(help="Triton replicas from the same S3 repository, behind HAProxy above 1")
    ] = 1,
    http_port: Annotated[int | None, _loopback_port("the validating HTTP front")] = None,
    grpc_port: Annotated[int | None, _loopback_port("the first replica's gRPC")] = None,
    metrics_port: Annotated[int | None, _loopback_port("the first replica's metrics")] = None,
    s3_port: Annotated[int | None, _loopback_port("the emulated S3")] = None,
    canary: Annotated[
        str | None,
        typer.Option(
            metavar="[MODEL:STABLE:CANARY]",
            help="after the smoke, split real requests between two served versions and mirror some "
            "(alone: the demo at FP32 as version 1 and at FP16 as version 2)",
        ),
    ] = None,
    canary_weight: Annotated[float, typer.Option(help="percent of requests the canary answers")] = 20.0,
    mirror: Annotated[float, typer.Option(help="percent of stable requests mirrored to the canary")] = 50.0,
    canary_requests: Annotated[int, typer.Option(help="requests sent through the split")] = 200,
    model_cache: Annotated[
        bool,
        typer.Option(
            help="fill each replica's repository through the node-local model cache in --work-dir, as the "
            "cluster's init container does (--no-model-cache: Triton reads S3 itself)"
        ),
    ] = True,
    model_cache_gib: Annotated[float, typer.Option(help="the model cache's size bound")] = 20.0,
) -> int:
    """Publish a model repository to emulated S3 and serve it with Triton."""
    from inferstack.serving.local.demo import build_canary_demo_repository, build_demo_repository
    from inferstack.serving.local.processes import SMOKE_TOLERANCE
    from inferstack.serving.local.records import Ports
    from inferstack.serving.local.runtime import LocalRuntime
    from inferstack.serving.local.tracing import SpanReceiver, triton_trace_args
    from inferstack.serving.local.triton_logs import triton_log_args
    from inferstack.serving.models.repository import read_repository

    def say(message: str) -> None:
        interrupt.check()  # between the steps of start-up: a Ctrl-C a library swallowed stops here
        if not as_json:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    ports = Ports(http=http_port, grpc=grpc_port, metrics=metrics_port, s3=s3_port)
    writable_folder(work_dir, "--work-dir")
    with tempfile.TemporaryDirectory(prefix="inferstack-demo-") as scratch:
        release = None if canary is None else _canary_release(canary, canary_weight, mirror, canary_requests)
        if repository is None and release is not None:
            say("building the demo model at FP32 (version 1) and FP16 (version 2)")
            repository = build_canary_demo_repository(Path(scratch) / "repository")
        elif repository is None:
            say("building the demo model (a small network built in code)")
            repository = build_demo_repository(Path(scratch) / "repository")
        # Checked before anything starts: both versions must be ones the repository has Triton serve.
        canary_model = None if release is None else _canary_model(read_repository(repository), release)
        with contextlib.ExitStack() as running:
            receiver = running.enter_context(SpanReceiver()) if trace else None
            # Only requests that ask for it (a sampled traceparent) are traced: rate 1 in a million.
            tracing = (
                ()
                if receiver is None
                else (
                    *triton_trace_args(receiver.url, rate=1_000_000, service_name="local"),
                    *triton_log_args(),
                )
            )
            runtime = LocalRuntime(
                repository,
                work_dir=work_dir,
                ports=ports,
                progress=say,
                replicas=replicas,
                triton_args=tracing,
                model_cache=model_cache,
                model_cache_gib=model_cache_gib,
            )
            running.enter_context(runtime)
            prometheus = None if no_prometheus else _local_prometheus(runtime, say)
            if prometheus is not None:
                running.enter_context(prometheus)
                say(f"Prometheus on {prometheus.url}, scraping Triton every second")
                prometheus.wait_for("nv_inference_request_success")
            results = runtime.smoke()
            ok = all(r.ok for r in results)
            summary: dict[str, Any] = {
                "ok": ok,
                "endpoints": {
                    "http": runtime.front_url,
                    "grpc": runtime.balanced_grpc_url or runtime.grpc_url,
                    **{
                        f"triton-{i} http (unchecked)": url for i, url in enumerate(runtime.replica_http_urls)
                    },
                    **{f"triton-{i} metrics": url for i, url in enumerate(runtime.replica_metrics_urls)},
                    "s3": runtime.s3_endpoint,
                    "model_repository": runtime.model_repository_uri,
                },
                "models": [m.name for m in runtime.models],
                # Locked as in the cluster: a replica's own port answers its admin APIs to this key only.
                "admin": {"header": next(iter(runtime.admin_headers)), "key": runtime.admin_key},
                "replica_starts": [asdict(r) for r in runtime.replica_starts],
                "smoke": [asdict(r) for r in results],
            }
            if release is not None and canary_model is not None:
                run = _run_canary(runtime, canary_model, release, canary_requests, say)
                summary["canary"] = asdict(run)
                ok = summary["ok"] = (
                    ok and run.stats.mirror_errors == 0 and sum(run.triton_failure.values()) == 0
                )
            if receiver is not None:
                summary["traces"] = _traced_requests(runtime, receiver, trace, say)
            if prometheus is not None:
                summary["endpoints"]["prometheus"] = prometheus.url
                summary["metrics"] = _evaluate_queries(prometheus, [m.name for m in runtime.models])
                summary["scraped"] = sorted(r["metric"]["pod"] for r in prometheus.query("up == 1"))
                if release is not None:
                    summary["canary"]["promql"] = _evaluate_canary_queries(prometheus, release)
            if as_json:
                print(json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False))
            else:
                print("\nsmoke inference (Triton vs the model's own TorchScript):")
                print_table(
                    [["model", "protocol", "max |diff|", "latency", "result"]]
                    + [
                        [
                            r.model,
                            r.protocol,
                            f"{r.max_abs_diff:.2e}",
                            f"{r.latency_ms:.1f} ms",
                            "ok" if r.ok else "ERROR" if r.error else f"MISMATCH (> {SMOKE_TOLERANCE:g})",
                        ]
                        for r in results
                    ]
                )
                failures: dict[tuple[str, str], list[str]] = {}
                for r in results:
                    if r.error:
                        failures.setdefault((r.model, r.error), []).append(r.protocol)
                for (model, error), protocols in failures.items():
                    print(f"\n{model} ({', '.join(protocols)}): {brief_error(error)}")
                if "traces" in summary:
                    _print_traces(summary["traces"])
                if "metrics" in summary:
                    print(
                        "\nthe cluster's PromQL, evaluated by Prometheus on this Triton "
                        f"(namespace {LOCAL_NAMESPACE!r}):"
                    )
                    names = list(next(iter(summary["metrics"].values())))
                    print_table(
                        [["model", *names]]
                        + [
                            [model, *(f"{v:.3g}" for v in values.values())]
                            for model, values in summary["metrics"].items()
                        ]
                    )
                if release is not None:
                    _print_canary(summary["canary"])
                print("\nendpoints:")
                print_table([["what", "where"], *([k, v] for k, v in summary["endpoints"].items())])
                print(
                    f"\nTriton's admin APIs (repository, shared memory, trace, logging) are locked as in the "
                    f"cluster: send {summary['admin']['header']}: {runtime.admin_key} to a replica's own "
                    "port; the gateway refuses them."
                )
            if once or not ok:
                return 0 if ok else 1
            say("serving; press Ctrl-C to stop")
            while True:  # a dead replica is restarted; anything worse raises RuntimeFailure, naming it
                interrupt.check()
                runtime.supervise()
                time.sleep(0.5)


def _canary_release(text: str, weight: float, mirror: float, requests: int) -> CanaryRelease:
    from inferstack.components.canary import CanaryRelease, check_canary

    model, *versions = text.split(":")
    if len(versions) != 2 or not all(v.isdigit() for v in versions):
        raise InvalidInput("--canary", text, "MODEL:STABLE:CANARY with version numbers, e.g. demo:1:2")
    release = CanaryRelease(model, int(versions[0]), int(versions[1]), weight, mirror)
    check_canary(release, [model])
    if not 1 <= requests <= 100_000:
        raise InvalidInput("--canary-requests", requests, "1 to 100000 requests")
    return release


def _traced_requests(
    runtime: LocalRuntime, receiver: SpanReceiver, count: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """``count`` requests with a traceparent each: their stage timings from Triton's own spans, and
    Triton's log as records with request ids (written beside its log)."""
    from inferstack.serving.client.client import TritonClient
    from inferstack.serving.local.tracing import request_timings, traceparent
    from inferstack.serving.local.triton_logs import parse_lines, request_states, write_json_lines
    from inferstack.serving.models.repository import generate_inputs

    model = runtime.models[0]
    sent: dict[str, str] = {}  # trace id -> request id
    with TritonClient(runtime.http_url, timeout_s=30.0) as client:
        for i in range(count):
            header = traceparent()
            request_id = f"trace-{i}"
            inputs = generate_inputs(model, seed=i)
            client.infer(model.name, inputs, request_id=request_id, headers={"traceparent": header})
            sent[header.split("-")[1]] = request_id
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(len(receiver.of_trace(t)) < 3 for t in sent):
        time.sleep(0.1)
    assert runtime.work_dir is not None
    log = runtime.work_dir / "triton-0.log"
    records = list(parse_lines(log.read_text().splitlines()))
    records_path = runtime.work_dir / "triton-0.jsonl"
    write_json_lines(records, records_path)
    states = request_states(records)
    say(f"{len(records)} Triton log records written to {records_path}")
    return {
        "requests": [
            {
                "request_id": sent[t.trace_id],
                "trace_id": t.trace_id,
                "model": t.model,
                "total_us": t.total_us,
                "stages_us": t.stages_us,
                "states": states.get(sent[t.trace_id], []),
            }
            for t in request_timings(s for trace in sent for s in receiver.of_trace(trace))
        ],
        "log_records": str(records_path),
        "receiver_errors": list(receiver.errors),
    }


def _print_traces(traces: dict[str, Any]) -> None:
    print("\nwhere each traced request's time went (Triton's OpenTelemetry spans, microseconds):")
    stages = ("queue", "compute_input", "infer", "compute_output")
    print_table(
        [["request id", "trace id", *stages, "total", "states (Triton's log)"]]
        + [
            [
                r["request_id"],
                r["trace_id"][:12],
                *(f"{r['stages_us'].get(stage, float('nan')):.0f}" for stage in stages),
                f"{r['total_us']:.0f}",
                " > ".join(r["states"]),
            ]
            for r in traces["requests"]
        ]
    )


def _canary_model(models: Sequence[RepositoryModel], release: CanaryRelease) -> RepositoryModel:
    model = next((m for m in models if m.name == release.model), None)
    if model is None:
        raise InvalidInput(
            "--canary", release.model, f"a model of the repository: {[m.name for m in models]}"
        )
    if not {release.stable_version, release.canary_version} <= set(model.served_versions):
        raise InvalidInput(
            "--canary",
            f"{model.name}:{release.stable_version}:{release.canary_version}",
            f"versions its version policy serves: {list(model.served_versions)} "
            "(build them with --version-policy specific:STABLE,CANARY)",
        )
    return model


def _run_canary(
    runtime: LocalRuntime,
    model: RepositoryModel,
    release: CanaryRelease,
    count: int,
    say: Callable[[str], None],
) -> CanaryRun:
    """Real requests through the split; the mirror is held to the canary build's own tolerance."""
    from inferstack.serving.client.traffic_split import exercise
    from inferstack.serving.local.processes import SMOKE_TOLERANCE
    from inferstack.serving.models.precision import served_tolerance
    from inferstack.serving.models.repository import generate_inputs

    folder = runtime.repository / model.name
    tolerance = served_tolerance(folder / str(release.canary_version), SMOKE_TOLERANCE)
    say(f"sending {count} requests through the canary split of {model.name}")
    requests = [generate_inputs(model, batch=1 + i % 4, seed=1000 + i) for i in range(count)]
    return exercise(runtime.http_url, runtime.metrics_url, release, requests, tolerance=tolerance)


def _evaluate_canary_queries(prometheus: LocalPrometheus, release: CanaryRelease) -> dict[str, float]:
    """The canary alerts' own signals, by Prometheus, on the counts of the run just made."""
    from inferstack.components import promql

    model, stable, canary = release.model, release.stable_version, release.canary_version
    queries = {
        "failure_ratio_excess": promql.triton_canary_failure_ratio_excess(
            model=model, stable_version=stable, canary_version=canary, namespace=LOCAL_NAMESPACE
        ),
        "p99_excess_ms": promql.triton_canary_p99_excess_ms(
            model=model, stable_version=stable, canary_version=canary, namespace=LOCAL_NAMESPACE
        ),
    }
    values = {}
    for name, query in queries.items():
        result = prometheus.query(query)
        values[name] = float(result[0]["value"][1]) if result else float("nan")
    return values


def _print_canary(run: dict[str, Any]) -> None:
    release, stats = run["release"], run["stats"]
    stable, canary = release["stable_version"], release["canary_version"]
    print(
        f"\ncanary release of {release['model']}: {run['requests']} requests, "
        f"{release['weight_percent']:g}% to the canary, {release['mirror_percent']:g}% of the rest mirrored"
    )
    sent = {stable: stats["stable"], canary: stats["canary"]}
    mirrored = {stable: 0, canary: stats["mirrored"] + stats["mirror_errors"]}
    print_table(
        [["version", "role", "answered", "mirrored to it", "Triton counted ok", "Triton counted failed"]]
        + [
            [
                str(version),
                role,
                str(sent[version]),
                str(mirrored[version]),
                f"{run['triton_success'].get(version, 0):.0f}",
                f"{run['triton_failure'].get(version, 0):.0f}",
            ]
            for version, role in ((stable, "stable"), (canary, "canary"))
        ]
    )
    print(
        f"mirrored answers compared: {stats['mirrored']}, beyond tolerance: {stats['mirror_mismatches']}, "
        f"max |stable - canary| {stats['mirror_max_abs_diff']:.2e}, canary errors {stats['mirror_errors']}, "
        f"dropped {stats['mirror_dropped']}"
    )
    if "promql" in run:
        signals = run["promql"]
        print(
            "the canary alerts' signals, by Prometheus: failure ratio above stable "
            f"{signals['failure_ratio_excess']:+.3g}, p99 above stable {signals['p99_excess_ms']:+.3g} ms"
        )


LOCAL_NAMESPACE = "local"


# The signals the dashboards and KEDA triggers watch, shown after the smoke inference.
_SHOWN_QUERIES = (
    "request_rate",
    "queue_time_per_request_ms",
    "compute_time_per_request_ms",
    "average_batch_size",
    "pending_requests",
)


def _local_prometheus(runtime: LocalRuntime, say: Callable[[str], None]) -> LocalPrometheus | None:
    """A real Prometheus for this Triton, labelled as a ServiceMonitor would; None if not installed."""
    import shutil

    from inferstack.serving.local.prometheus import LocalPrometheus, ScrapeTarget

    if shutil.which("prometheus") is None:
        say("prometheus not installed: skipping the PromQL check (bash .ci/bootstrap installs it)")
        return None
    return LocalPrometheus(
        [
            ScrapeTarget(
                f"triton-{i}", url, {"namespace": LOCAL_NAMESPACE, "service": "local", "pod": f"local-{i}"}
            )
            for i, url in enumerate(runtime.replica_metrics_urls)
        ]
    )


def _evaluate_queries(prometheus: LocalPrometheus, models: list[str]) -> dict[str, dict[str, float]]:
    from inferstack.components.promql import triton_queries

    time.sleep(2.5 * prometheus.interval_s)  # two scrapes after the smoke requests
    table: dict[str, dict[str, float]] = {}
    for model in models:
        queries = triton_queries(model=model, namespace=LOCAL_NAMESPACE)
        table[model] = {}
        for name in _SHOWN_QUERIES:
            result = prometheus.query(queries[name])
            table[model][name] = float(result[0]["value"][1]) if result else float("nan")
    return table
