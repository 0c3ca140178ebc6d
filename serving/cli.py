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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from inferstack.infra.errors import InvalidInput

if TYPE_CHECKING:  # the CLI imports these lazily: `inferstack --help` must not load torch
    from inferstack.serving.local import LocalRuntime
    from inferstack.serving.prometheus import LocalPrometheus


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
        "--no-prometheus",
        action="store_true",
        help="skip the local Prometheus (used by default when the prometheus binary is installed)",
    )
    for name in ("http", "grpc", "metrics", "s3"):
        up.add_argument(f"--{name}-port", type=int, help=f"{name} port on 127.0.0.1 (default: a free one)")

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
    build.add_argument("--out", type=Path, required=True, help="the repository folder to write into")
    publish = model_commands.add_parser("publish", help="upload a model repository to S3")
    publish.add_argument("repository", type=Path)
    publish.add_argument("destination", metavar="s3://BUCKET/PREFIX")
    publish.add_argument("--endpoint-url", help="a non-AWS S3 endpoint, e.g. http://127.0.0.1:5000")
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

    policy = commands.add_parser("policy", help="the CrossGuard policy pack")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="run a stack offline and check it with the policy pack")
    check.add_argument(
        "--stack", required=True, help="dev, staging, prod: a Pulumi.<stack>.yaml in --stacks-dir"
    )
    check.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="the Pulumi program folder")
    return parser


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


def _local_up(args: argparse.Namespace) -> int:
    from inferstack.serving.local import SMOKE_TOLERANCE, LocalRuntime, Ports, build_demo_repository

    def say(message: str) -> None:
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    ports = Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port, s3=args.s3_port)
    with tempfile.TemporaryDirectory(prefix="inferstack-demo-") as scratch:
        repository = args.repository
        if repository is None:
            say("building the demo model (a small network built in code)")
            repository = build_demo_repository(Path(scratch) / "repository")
        runtime = LocalRuntime(repository, work_dir=args.work_dir, ports=ports, progress=say)
        with contextlib.ExitStack() as running:
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
                    "http": runtime.http_url,
                    "grpc": runtime.grpc_url,
                    "metrics": runtime.metrics_url,
                    "s3": runtime.s3_endpoint,
                    "model_repository": runtime.model_repository_uri,
                },
                "models": [m.name for m in runtime.models],
                "smoke": [asdict(r) for r in results],
            }
            if prometheus is not None:
                summary["endpoints"]["prometheus"] = prometheus.url
                summary["metrics"] = _evaluate_queries(prometheus, [m.name for m in runtime.models])
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
                print("\nendpoints:")
                _print_table([["what", "where"], *([k, v] for k, v in summary["endpoints"].items())])
            if args.once or not ok:
                return 0 if ok else 1
            say("serving; press Ctrl-C to stop")
            while all(child.alive() for child in runtime.children):
                time.sleep(0.5)
            say("a child process exited; stopping")
            return 1


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
    labels = {"namespace": LOCAL_NAMESPACE, "service": "local", "pod": "local-0"}
    return LocalPrometheus([ScrapeTarget("triton", runtime.metrics_url, labels)])


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
    from inferstack.serving.repository import (
        DynamicBatching,
        ModelOptions,
        build_from_signature,
        parse_tensor_spec,
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
    )
    built = build_from_signature(
        args.torchscript,
        name=args.name,
        inputs=inputs,
        outputs=outputs,
        repository=args.out,
        target=args.target,
        options=options,
        version=args.version,
    )
    print(f"built {built.name} version {built.version} ({built.target}) in {built.path}")
    return 0


def _models_publish(args: argparse.Namespace) -> int:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.serving.publish import publish_repository

    if args.endpoint_url is not None:
        url = urlsplit(args.endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput("--endpoint-url", args.endpoint_url, "an http(s)://HOST[:PORT] URL")
    try:
        report = publish_repository(
            args.repository, args.destination, endpoint_url=args.endpoint_url, progress=print
        )
    # RuntimeError: an object read back with a sha256 other than the file's.
    except (Boto3Error, BotoCoreError, ClientError, RuntimeError) as error:
        print(f"inferstack: publishing to {args.destination} failed: {error}", file=sys.stderr)
        return 1
    print(f"{report.location.uri}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged")
    return 0


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
    from inferstack.policies.offline import run_stack
    from inferstack.policies.plan import summary, tree_lines, write_manifests

    _check_stacks_dir(args.stacks_dir)
    recording = run_stack(args.stacks_dir, args.stack)
    print(f"stack {args.stack}: {len(recording.resources)} resources to create\n")
    for line in tree_lines(recording):
        print(line)
    print()
    _print_table([["count", "type"], *([str(n), t] for t, n in summary(recording))])
    written = write_manifests(recording, args.out / args.stack)
    print(f"\n{len(written)} Kubernetes manifests written to {args.out / args.stack}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from inferstack.policies.check import check_stack

    _check_stacks_dir(args.stacks_dir)
    report = check_stack(args.stacks_dir, args.stack)
    print(
        f"stack {report.stack}: {report.resources} resources checked against {len(report.policies)} policies"
    )
    if report.findings:
        _print_table(
            [["level", "policy", "resource", "message"]]
            + [
                [
                    "MANDATORY" if f.violation.mandatory else "advisory",
                    f.violation.policy,
                    f"{f.resource.type.rsplit(':', 1)[-1]} {f.resource.name}",
                    f.violation.message.splitlines()[-1],
                ]
                for f in report.findings
            ]
        )
    advisory = len(report.findings) - len(report.mandatory)
    print(f"{len(report.mandatory)} mandatory violation(s), {advisory} advisory")
    return 1 if report.mandatory else 0


def _stop_on_sigterm() -> None:
    def handler(_signum: int, _frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop_on_sigterm()
    handlers: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
        ("local", "up"): _local_up,
        ("models", "build"): _models_build,
        ("models", "publish"): _models_publish,
        ("policy", "check"): _policy_check,
        ("plan", None): _plan,
        ("bench", None): _bench,
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
    except Exception as error:
        from inferstack.serving.local import RuntimeFailure

        if isinstance(error, RuntimeFailure):
            print(f"inferstack: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
