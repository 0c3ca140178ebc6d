"""The ``inferstack`` command line.

Heavy imports (torch, tritonclient, boto3, moto) happen inside the commands that need them, so
``inferstack --help`` is instant. Bad input exits with code 2 and one line naming the field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from inferstack.infra.errors import InvalidInput

if TYPE_CHECKING:  # the CLI imports these lazily: `inferstack --help` must not load torch
    from inferstack.components.canary import CanaryRelease
    from inferstack.serving.local import LocalRuntime
    from inferstack.serving.prometheus import LocalPrometheus
    from inferstack.serving.repository import RepositoryModel
    from inferstack.serving.tracing import SpanReceiver
    from inferstack.serving.traffic_split import CanaryRun


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferstack", description="GPU model serving on AWS with Triton.")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the embedded runtime: emulated S3 + real Triton on loopback")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser(
        "up", help="publish a model repository to emulated S3 and serve it with Triton"
    )
    up.add_argument(
        "--repository", type=Path, help="a model repository folder (default: build the demo model)"
    )
    up.add_argument("--once", action="store_true", help="exit after the smoke inference (0 on success)")
    up.add_argument("--json", action="store_true", help="print a machine-readable summary")
    up.add_argument(
        "--work-dir", type=Path, help="where logs and the served copy go (default: a temp folder)"
    )
    up.add_argument(
        "--trace",
        type=int,
        nargs="?",
        const=5,
        default=0,
        metavar="N",
        help="after the smoke, send N requests (default 5) with a W3C traceparent and request id: print "
        "where each one's time went from Triton's OpenTelemetry spans, and write Triton's log lines as "
        "records (triton-0.jsonl in the work folder)",
    )
    up.add_argument(
        "--no-prometheus",
        action="store_true",
        help="skip the local Prometheus (used by default when the prometheus binary is installed)",
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="Triton replicas from the same S3 repository, behind HAProxy above 1 (default: 1)",
    )
    for name, what in (
        ("http", "the validating HTTP front"),
        ("grpc", "the first replica's gRPC"),
        ("metrics", "the first replica's metrics"),
        ("s3", "the emulated S3"),
    ):
        up.add_argument(f"--{name}-port", type=int, help=f"{what} on 127.0.0.1 (default: a free port)")
    up.add_argument(
        "--canary",
        nargs="?",
        const="demo:1:2",
        metavar="MODEL:STABLE:CANARY",
        help="after the smoke, split real requests between two served versions and mirror some "
        "(alone: the demo at FP32 as version 1 and at FP16 as version 2)",
    )
    up.add_argument(
        "--canary-weight", type=float, default=20.0, help="percent of requests the canary answers"
    )
    up.add_argument(
        "--mirror", type=float, default=50.0, help="percent of stable requests mirrored to the canary"
    )
    up.add_argument("--canary-requests", type=int, default=200, help="requests sent through the split")

    models = commands.add_parser("models", help="build and publish Triton model repositories")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    build = model_commands.add_parser("build", help="package a TorchScript file as a Triton model")
    build.add_argument("--torchscript", type=Path, required=True)
    build.add_argument("--name", required=True)
    build.add_argument("--input", action="append", required=True, metavar="NAME:DTYPE:DIMS")
    build.add_argument("--output", action="append", required=True, metavar="NAME:DTYPE:DIMS")
    build.add_argument("--max-batch-size", type=int, default=8)
    build.add_argument("--target", default="python", choices=["python", "pytorch_libtorch"])
    build.add_argument("--instance-kind", default="KIND_CPU", choices=["KIND_CPU", "KIND_GPU"])
    build.add_argument(
        "--preferred-batch-size", type=int, action="append", default=[], help="dynamic batcher (repeatable)"
    )
    build.add_argument(
        "--max-queue-delay-us",
        type=int,
        help="how long the dynamic batcher waits to fill a batch (default: 100)",
    )
    build.add_argument("--instances", type=int, default=1, help="model instances (each runs its own forward)")
    build.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads per instance (default: torch's, all cores)"
    )
    build.add_argument("--version", type=int, default=1)
    build.add_argument(
        "--version-policy",
        default="latest:1",
        metavar="latest:N|specific:V,V|all",
        help="which versions Triton serves (several: a stable and a canary)",
    )
    build.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "bf16", "int8-dynamic"],
        help="reduce at packaging, refused unless within the tolerance of the FP32 answers "
        "(int8-dynamic: CPU instances only)",
    )
    build.add_argument(
        "--calibration", type=Path, metavar="FILE.npz", help="inputs to compare on (default: generated)"
    )
    build.add_argument("--max-abs-error", type=float, help="tolerance: largest |reduced - fp32|")
    build.add_argument(
        "--max-rel-error", type=float, help="tolerance: largest |reduced - fp32| / largest |fp32| per output"
    )
    build.add_argument(
        "--min-top1-agreement", type=float, help="tolerance for classifiers: share of rows with one argmax"
    )
    build.add_argument("--out", type=Path, required=True, help="the repository folder to write into")
    publish = model_commands.add_parser("publish", help="upload a model repository to S3")
    publish.add_argument("repository", type=Path)
    publish.add_argument("destination", metavar="s3://BUCKET/PREFIX")
    publish.add_argument("--endpoint-url", help="a non-AWS S3 endpoint, e.g. http://127.0.0.1:5000")
    publish.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files of published versions, or their model's config without a new version",
    )
    verify = model_commands.add_parser(
        "verify", help="check every published object's sha256 against its model's manifest"
    )
    verify.add_argument("location", metavar="s3://BUCKET/PREFIX")
    verify.add_argument("--endpoint-url", help="a non-AWS S3 endpoint, e.g. http://127.0.0.1:5000")
    bench = commands.add_parser(
        "bench",
        help="Triton vs Triton without batching vs a plain PyTorch app vs the in-process ceiling, "
        "driven by perf_analyzer",
    )
    bench.add_argument(
        "--url",
        help="a running Triton (e.g. the cluster's, on a GPU node): measure --model there, and "
        "--model-unbatched beside it where served (default: a local Triton and plain app)",
    )
    bench.add_argument(
        "--repository", type=Path, help="a model repository (default: the built-in MLP, or the demo)"
    )
    bench.add_argument(
        "--model",
        help="the model to measure (default: the repository's only model; without --repository: "
        "mlp, the compute-bound bench model, or demo, the tiny smoke model)",
    )
    bench.add_argument("--concurrency", default="1,4,16", help="client counts to sweep, e.g. 1,4,16")
    bench.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    bench.add_argument(
        "--stability", type=float, default=25.0, help="%% by which 3 windows in a row may differ"
    )
    bench.add_argument("--max-trials", type=int, default=10, help="windows before a point is unstable")
    bench.add_argument(
        "--rounds", type=int, default=1, help="runs per level, alternating order; the median is reported"
    )
    bench.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="where bench.json and bench.png go"
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON (progress to stderr)")
    bench.add_argument(
        "--search",
        action="store_true",
        help="search max_batch_size x max_queue_delay x instances x torch threads at the top concurrency",
    )
    bench.add_argument(
        "--plan",
        action="store_true",
        help="instead: time and peak memory of `inferstack plan` for stacks of --plan-sizes services",
    )
    bench.add_argument("--plan-sizes", default="1,10,100", help="--plan: service counts")
    bench.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="--plan: the Pulumi program")
    _config_argument(bench)
    bench.add_argument("--p99-ms", type=float, help="--search: the p99 latency the best config must meet")
    bench.add_argument("--search-batch", default="8,16,32", help="--search: max_batch_size values")
    bench.add_argument("--search-delay-us", default="100,2000", help="--search: max_queue_delay values")
    bench.add_argument("--search-instances", default="1,2", help="--search: instance counts")
    bench.add_argument(
        "--search-threads",
        default=None,
        help="--search: torch threads per instance (default: 1 and all cores)",
    )
    bench.add_argument(
        "--write", action="store_true", help="--search: write the best config into --repository"
    )

    plan = commands.add_parser(
        "plan", help="what `pulumi preview` would create, offline, with manifests written out"
    )
    plan.add_argument(
        "--stack", required=True, help="dev, staging, prod: a Pulumi.<stack>.yaml in --stacks-dir"
    )
    plan.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="the Pulumi program folder")
    plan.add_argument("--out", type=Path, default=Path("out/plan"), help="where the Kubernetes manifests go")
    plan.add_argument("--json", action="store_true", help="print the plan as `pulumi preview --json` does")
    _config_argument(plan)

    policy = commands.add_parser("policy", help="the CrossGuard policy pack")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="run a stack offline and check it with the policy pack")
    check.add_argument(
        "--stack", required=True, help="dev, staging, prod: a Pulumi.<stack>.yaml in --stacks-dir"
    )
    check.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="the Pulumi program folder")
    check.add_argument(
        "--policy-config",
        type=Path,
        help="a `--policy-pack-config` file (default: policies/pack-config/<stack>.json where it exists)",
    )
    check.add_argument("--json", action="store_true", help="print the violations as JSON")
    _config_argument(check)

    cost = commands.add_parser(
        "cost", help="monthly cost estimate of a stack by resource group, spot vs on-demand"
    )
    cost.add_argument("--stack", required=True, help="a Pulumi.<stack>.yaml in --stacks-dir")
    cost.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="the Pulumi program folder")
    cost.add_argument(
        "--prices", type=Path, help="a JSON price table over the packaged one (same keys, any subset)"
    )
    cost.add_argument(
        "--model-gb", type=float, default=20.0, help="size of the model store in GB (default 20)"
    )
    cost.add_argument("--json", action="store_true", help="print a machine-readable estimate")
    cost.add_argument("--plot", type=Path, metavar="OUT.png", help="also write a bar chart")
    _config_argument(cost)
    return parser


def _config_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a stack setting, as `pulumi config set --path KEY VALUE` would make it "
        "(e.g. 'inferstack:cluster.publicAccessCidrs=[\"198.51.100.7/32\"]'); repeatable",
    )


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput("--config", pair, "KEY=VALUE, such as inferstack:cluster.name=ml-prod")
        settings[key] = value
    return settings


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))


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


def _traced_requests(
    runtime: LocalRuntime, receiver: SpanReceiver, count: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """``count`` requests with a traceparent each: their stage timings from Triton's own spans, and
    Triton's log as records with request ids (written beside its log)."""
    from inferstack.serving.client import TritonClient
    from inferstack.serving.repository import generate_inputs
    from inferstack.serving.tracing import request_timings, traceparent
    from inferstack.serving.triton_logs import parse_lines, request_states, write_json_lines

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
    _print_table(
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


def _local_up(args: argparse.Namespace) -> int:
    from inferstack.serving.local import (
        SMOKE_TOLERANCE,
        LocalRuntime,
        Ports,
        build_canary_demo_repository,
        build_demo_repository,
    )
    from inferstack.serving.repository import read_repository
    from inferstack.serving.tracing import SpanReceiver, triton_trace_args
    from inferstack.serving.triton_logs import triton_log_args

    def say(message: str) -> None:
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    ports = Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port, s3=args.s3_port)
    with tempfile.TemporaryDirectory(prefix="inferstack-demo-") as scratch:
        repository = args.repository
        release = None if args.canary is None else _canary_release(args)
        if repository is None and release is not None:
            say("building the demo model at FP32 (version 1) and FP16 (version 2)")
            repository = build_canary_demo_repository(Path(scratch) / "repository")
        elif repository is None:
            say("building the demo model (a small network built in code)")
            repository = build_demo_repository(Path(scratch) / "repository")
        # Checked before anything starts: both versions must be ones the repository has Triton serve.
        canary_model = None if release is None else _canary_model(read_repository(repository), release)
        with contextlib.ExitStack() as running:
            receiver = running.enter_context(SpanReceiver()) if args.trace else None
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
                work_dir=args.work_dir,
                ports=ports,
                progress=say,
                replicas=args.replicas,
                triton_args=tracing,
            )
            running.enter_context(runtime)
            prometheus = None if args.no_prometheus else _local_prometheus(runtime, say)
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
                "smoke": [asdict(r) for r in results],
            }
            if release is not None and canary_model is not None:
                run = _run_canary(runtime, canary_model, release, args.canary_requests, say)
                summary["canary"] = asdict(run)
                ok = summary["ok"] = (
                    ok and run.stats.mirror_errors == 0 and sum(run.triton_failure.values()) == 0
                )
            if receiver is not None:
                summary["traces"] = _traced_requests(runtime, receiver, args.trace, say)
            if prometheus is not None:
                summary["endpoints"]["prometheus"] = prometheus.url
                summary["metrics"] = _evaluate_queries(prometheus, [m.name for m in runtime.models])
                summary["scraped"] = sorted(r["metric"]["pod"] for r in prometheus.query("up == 1"))
                if release is not None:
                    summary["canary"]["promql"] = _evaluate_canary_queries(prometheus, release)
            if args.json:
                print(json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False))
            else:
                print("\nsmoke inference (Triton vs the model's own TorchScript):")
                _print_table(
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
                    _print_table(
                        [["model", *names]]
                        + [
                            [model, *(f"{v:.3g}" for v in values.values())]
                            for model, values in summary["metrics"].items()
                        ]
                    )
                if release is not None:
                    _print_canary(summary["canary"])
                print("\nendpoints:")
                _print_table([["what", "where"], *([k, v] for k, v in summary["endpoints"].items())])
            if args.once or not ok:
                return 0 if ok else 1
            say("serving; press Ctrl-C to stop")
            while True:  # a dead replica is restarted; anything worse raises RuntimeFailure, naming it
                runtime.supervise()
                time.sleep(0.5)


def _canary_release(args: argparse.Namespace) -> CanaryRelease:
    from inferstack.components.canary import CanaryRelease, check_canary

    model, *versions = args.canary.split(":")
    if len(versions) != 2 or not all(v.isdigit() for v in versions):
        raise InvalidInput("--canary", args.canary, "MODEL:STABLE:CANARY with version numbers, e.g. demo:1:2")
    release = CanaryRelease(model, int(versions[0]), int(versions[1]), args.canary_weight, args.mirror)
    check_canary(release, [model])
    if not 1 <= args.canary_requests <= 100_000:
        raise InvalidInput("--canary-requests", args.canary_requests, "1 to 100000 requests")
    return release


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
    from inferstack.serving.local import SMOKE_TOLERANCE
    from inferstack.serving.precision import served_tolerance
    from inferstack.serving.repository import generate_inputs
    from inferstack.serving.traffic_split import exercise

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
    _print_table(
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

    from inferstack.serving.prometheus import LocalPrometheus, ScrapeTarget

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


def _models_build(args: argparse.Namespace) -> int:
    from inferstack.serving.precision import (
        REPORT_FILE,
        PrecisionOptions,
        Tolerance,
        ToleranceExceeded,
        load_calibration,
    )
    from inferstack.serving.repository import (
        DynamicBatching,
        ModelOptions,
        build_from_signature,
        parse_tensor_spec,
        parse_version_policy,
    )

    inputs = [parse_tensor_spec(text, field=f"--input[{i}]") for i, text in enumerate(args.input)]
    outputs = [parse_tensor_spec(text, field=f"--output[{i}]") for i, text in enumerate(args.output)]
    batching = DynamicBatching(preferred_batch_sizes=tuple(args.preferred_batch_size))
    if args.max_queue_delay_us is not None:
        batching = replace(batching, max_queue_delay_us=args.max_queue_delay_us)
    if args.max_batch_size == 0 and (args.preferred_batch_size or args.max_queue_delay_us is not None):
        raise InvalidInput("--max-batch-size", 0, "> 0 with dynamic batching flags (0: no batch axis)")
    options = ModelOptions(
        max_batch_size=args.max_batch_size,
        instance_kind=args.instance_kind,
        instance_count=args.instances,
        dynamic_batching=batching if args.max_batch_size > 0 else None,
        torch_threads=args.torch_threads,
        version_policy=parse_version_policy(args.version_policy, field="--version-policy"),
    )
    precision = PrecisionOptions(
        args.precision,
        Tolerance(args.max_abs_error, args.max_rel_error, args.min_top1_agreement),
        None if args.calibration is None else load_calibration(args.calibration),
    )
    try:
        built = build_from_signature(
            args.torchscript,
            name=args.name,
            inputs=inputs,
            outputs=outputs,
            repository=args.out,
            target=args.target,
            options=options,
            version=args.version,
            precision=precision,
        )
    except ToleranceExceeded as refused:
        print("\n".join(refused.report.lines()), file=sys.stderr)
        print(f"inferstack: {refused}", file=sys.stderr)
        return 1
    print(f"built {built.name} version {built.version} ({built.target}) in {built.path}")
    if built.report is not None:
        print("\n".join(built.report.lines()))
        print(f"report written to {built.path / str(built.version) / REPORT_FILE}")
    return 0


def _s3_client(endpoint_url: str | None) -> Any:
    """An S3 client whose every call gives up within seconds: a hung endpoint is reported, not waited on."""
    import boto3
    from botocore.config import Config

    if endpoint_url is not None:
        url = urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput("--endpoint-url", endpoint_url, "an http(s)://HOST[:PORT] URL")
    config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _s3_failed(what: str, error: Exception) -> int:
    print(f"inferstack: {what} failed: {error}", file=sys.stderr)
    for note in getattr(error, "__notes__", []):
        print(f"inferstack: {note}", file=sys.stderr)
    return 1


def _models_publish(args: argparse.Namespace) -> int:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.serving.publish import parse_s3_uri, publish_repository

    location = parse_s3_uri(args.destination)
    s3 = _s3_client(args.endpoint_url)
    print(f"publishing {args.repository} to {location.uri} ({args.endpoint_url or 'AWS S3'})", flush=True)
    try:
        report = publish_repository(
            args.repository,
            location,
            s3=s3,
            progress=lambda line: print(line, flush=True),
            overwrite=args.overwrite,
        )
    # RuntimeError: an object read back with a sha256 other than the file's.
    except (Boto3Error, BotoCoreError, ClientError, RuntimeError) as error:
        return _s3_failed(f"publishing to {location.uri}", error)
    print(f"{report.location.uri}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.serving.publish import parse_s3_uri, verify_published

    location = parse_s3_uri(args.location, field="location")
    s3 = _s3_client(args.endpoint_url)
    print(f"verifying {location.uri} against its manifests ({args.endpoint_url or 'AWS S3'})", flush=True)
    try:
        problems = verify_published(location, s3=s3)
    except (BotoCoreError, ClientError, ValueError) as error:
        return _s3_failed(f"verifying {location.uri}", error)
    for problem in problems:
        print(f"  {problem}")
    print(f"{location.uri}: " + (f"{len(problems)} problem(s)" if problems else "every object matches"))
    return 1 if problems else 0


def _bench(args: argparse.Namespace) -> int:
    from inferstack.serving.bench import table
    from inferstack.serving.bench_run import BenchRequest, run_bench

    if args.plan:
        return _bench_plan(args)
    request = BenchRequest(
        url=args.url,
        repository=args.repository,
        model=args.model,
        levels=args.concurrency,
        window_ms=args.window_ms,
        stability_pct=args.stability,
        max_trials=args.max_trials,
        out=args.out,
        search=args.search,
        p99_ms=args.p99_ms,
        write=args.write,
        rounds=args.rounds,
        space=(args.search_batch, args.search_delay_us, args.search_instances, args.search_threads),
    ).checked()
    progress = sys.stderr if args.json else sys.stdout

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=progress, flush=True)

    result = run_bench(request, progress=say)
    json_path = request.out / "bench.json"
    json_path.write_text(json.dumps(json_safe(result.report), indent=2, allow_nan=False) + "\n")
    say(f"report: {json_path}")
    if args.json:
        print(json.dumps(json_safe(result.report), indent=2, allow_nan=False))
    else:
        print()
        _print_table(table(result.points))
        for line in result.summary:
            print(line)
    return 1 if result.failed else 0


def _bench_plan(args: argparse.Namespace) -> int:
    from inferstack.serving.bench import parse_concurrency
    from inferstack.serving.plan_benchmark import is_linear, marginal_seconds, plan_benchmark

    _check_stacks_dir(args.stacks_dir)
    sizes = parse_concurrency(args.plan_sizes.replace(" ", ""), field="--plan-sizes", maximum=1000)
    runs = plan_benchmark(
        args.stacks_dir,
        sizes=sizes,
        settings=_settings(args.config),
        progress=lambda r: print(
            f"  {r.services:>4} services: {r.resources} resources, {r.seconds:.1f} s, "
            f"peak {r.peak_rss_mb:.0f} MB",
            file=sys.stderr if args.json else sys.stdout,
            flush=True,
        ),
    )
    steps = marginal_seconds(runs)
    linear = is_linear(runs)
    if args.json:
        summary = {"runs": [asdict(r) for r in runs], "seconds_per_added_service": steps, "linear": linear}
        print(json.dumps(summary, indent=2))
    else:
        print()
        _print_table(
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


def _check_stacks_dir(path: Path) -> None:
    if not (path / "__main__.py").is_file():
        raise InvalidInput("--stacks-dir", str(path), "a Pulumi program folder holding __main__.py")


def _plan(args: argparse.Namespace) -> int:
    from inferstack.policies.offline import run_stack, stack_config, with_settings
    from inferstack.policies.plan import preview_json, summary, tree_lines, write_manifests

    _check_stacks_dir(args.stacks_dir)
    settings = _settings(args.config)
    recording = run_stack(args.stacks_dir, args.stack, settings)
    if args.json:
        write_manifests(recording, args.out / args.stack)
        config = with_settings(stack_config(args.stacks_dir, args.stack), settings)
        print(json.dumps(preview_json(recording, args.stack, config), indent=2))
        return 0
    print(f"stack {args.stack}: {len(recording.resources)} resources to create\n")
    for line in tree_lines(recording):
        print(line)
    print()
    _print_table([["count", "type"], *([str(n), t] for t, n in summary(recording))])
    written = write_manifests(recording, args.out / args.stack)
    print(f"\n{len(written)} Kubernetes manifests written to {args.out / args.stack}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    """Exit 0: no mandatory violation; 1: at least one; 2: the check could not run."""
    # The pack runs in a process of its own, which needs pulumi-policy: say so before running the stack.
    import pulumi_policy  # noqa: F401

    from inferstack.policies.check import check_stack

    _check_stacks_dir(args.stacks_dir)
    try:
        report = check_stack(args.stacks_dir, args.stack, args.policy_config, _settings(args.config))
    except InvalidInput:
        raise
    except Exception as error:  # the program or the pack failed: no verdict, which must not read as a pass
        print(f"inferstack: the policy check could not run: {brief_error(str(error))}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 1 if report.mandatory else 0
    config = f" (pack config {report.config})" if report.config else ""
    print(f"stack {report.stack}: {report.resources} resources, {len(report.levels)} policies{config}")
    rows = [["level", "policy", "resource", "message"]]
    for f in sorted(report.findings, key=lambda f: (not f.violation.mandatory, f.violation.policy, f.where)):
        # Long reasons wrap under their own column, so the table stays readable in a terminal.
        lines = textwrap.wrap(f.violation.reason, 70) or [""]
        rows.append(
            ["MANDATORY" if f.violation.mandatory else "advisory", f.violation.policy, f.where, lines[0]]
        )
        rows += [["", "", "", line] for line in lines[1:]]
    if report.findings:
        _print_table(rows)
    advisory = len(report.findings) - len(report.mandatory)
    print(f"{len(report.mandatory)} mandatory violation(s), {advisory} advisory")
    return 1 if report.mandatory else 0


def _cost(args: argparse.Namespace) -> int:
    from inferstack.infra.cost import estimate, footprint, load_prices
    from inferstack.policies.offline import run_stack, stack_config

    _check_stacks_dir(args.stacks_dir)
    prices = load_prices(args.prices)
    region = stack_config(args.stacks_dir, args.stack).get("aws:region", prices.region)
    result = estimate(
        footprint(run_stack(args.stacks_dir, args.stack, _settings(args.config))),
        prices,
        model_gb=args.model_gb,
    )
    sources = {
        key: getattr(prices, key) for key in ("source", "date", "region", "currency", "spot_discount_source")
    }
    if args.json:
        summary = {
            "stack": args.stack,
            "region": region,
            "lines": [asdict(line) for line in result.lines],
            "total": result.total,
            "all_on_demand": result.all_on_demand,
            "spot_saving_pct": result.spot_saving_pct,
            "prices": sources,
        }
        print(json.dumps(summary, indent=2))
    else:
        print(f"stack {args.stack}: monthly estimate ({prices.currency}, {prices.hours_per_month:g} h/month)")
        if region != prices.region:
            print(f"note: priced at {prices.region}'s prices; the stack runs in {region}")
        print()
        rows = [
            [line.group, f"{line.monthly:,.2f}" + ("" if line.in_total else " *"), line.detail]
            for line in result.lines
        ]
        _print_table([["group", "per month", "what"], *rows, ["total", f"{result.total:,.2f}", ""]])
        print(
            f"\nall on demand: {result.all_on_demand:,.2f}; spot saves {result.spot_saving_pct:.1f} %"
            "\n* spot at min and max: the range the autoscaler may take, not in the total"
            f"\nprices: {prices.source} (as of {prices.date})\nspot discounts: {prices.spot_discount_source}"
        )
    if args.plot:
        from inferstack.serving.cost_chart import write_bar_chart

        written = write_bar_chart(result, prices, title=f"stack {args.stack}", path=args.plot)
        print(f"bar chart written to {written}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _stop_on_sigterm() -> None:
    def handler(_signum: int, _frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# The extra that brings each third-party module a command may import (pyproject's optional deps).
_EXTRAS = {
    "torch": "serving",
    "numpy": "serving",
    "tritonclient": "serving",
    "boto3": "serving",
    "botocore": "serving",
    "grpc": "serving",
    "moto": "local",
    "pulumi_policy": "policy",
}


def missing_extra(module: str) -> str | None:
    """The extra to install for a module that failed to import, if it is one of the extras'."""
    return _EXTRAS.get(module.split(".")[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop_on_sigterm()
    handlers: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
        ("local", "up"): _local_up,
        ("models", "build"): _models_build,
        ("models", "publish"): _models_publish,
        ("models", "verify"): _models_verify,
        ("policy", "check"): _policy_check,
        ("plan", None): _plan,
        ("bench", None): _bench,
        ("cost", None): _cost,
    }
    sub: str | None = getattr(args, f"{args.command}_command", None)
    try:
        return handlers[(args.command, sub)](args)
    except InvalidInput as error:
        print(f"inferstack: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninferstack: stopped", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        extra = missing_extra(error.name or "")
        if extra is None:
            raise
        print(
            f"inferstack: this command needs the {extra} extra (module {error.name} is not installed): "
            f"pip install 'inferstack[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except Exception as error:
        from inferstack.serving.local import RuntimeFailure

        if isinstance(error, RuntimeFailure):
            print(f"inferstack: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
