"""`inferstack bench`: perf_analyzer's export read right, the ratios, the search, and short real runs.

No timing is asserted: a benchmark reports numbers, tests check that it measures what it says.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from inferstack.cli.main import main
from inferstack.cli.plan_benchmark import (
    PlanRun,
    is_linear,
    marginal_seconds,
    plan_benchmark,
    with_services,
)
from inferstack.infra.errors import InvalidInput
from inferstack.serving.bench.baseline_server import (
    BaselineServer,
    decode_request,
    encode_response,
)
from inferstack.serving.bench.config_search import (
    Candidate,
    Trial,
    best_trial,
    candidate_config,
    write_best,
)
from inferstack.serving.bench.contenders import (
    CEILING,
    PLAIN,
    TRITON,
    UNBATCHED,
    Point,
    add_unbatched_variant,
    ceiling_batch,
    group_cpu_seconds,
    in_process_point,
    parse_concurrency,
    percentile,
    variable_shapes,
)
from inferstack.serving.bench.perf_analyzer import (
    Load,
    PerfAnalyzer,
    PerfAnalyzerMissing,
    find_perf_analyzer,
    measurement_from_row,
    parse_csv,
    perf_analyzer_argv,
)
from inferstack.serving.bench.report import geometric_mean_ratio, medians, ratio, table
from inferstack.serving.bench.run import BenchRequest
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.build import build_model
from inferstack.serving.models.config import parse_config
from inferstack.serving.models.repository import (
    generate_inputs,
    read_repository,
    run_reference,
    to_python_target,
)
from inferstack.serving.models.specs import DynamicBatching, ModelOptions
from tests.conftest import unavailable
from tests.harness import DEPLOYER

# What perf_analyzer 2.51.0 wrote with -f for one point against this project's Triton (then a metrics table).
PERF_CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
16,271.049,251,2057,20765,196,33999,1250,0,49591,100745,124295,141337

Concurrency,Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,Total GPU Memory
16,,,,
"""


def perf_or_unavailable() -> PerfAnalyzer:
    try:
        return find_perf_analyzer()
    except PerfAnalyzerMissing as error:
        unavailable(str(error))
        raise


# --- perf_analyzer's side ----------------------------------------------------------------------------


def test_the_csv_export_is_read_in_milliseconds() -> None:
    rows = parse_csv(PERF_CSV)
    assert len(rows) == 1  # the metrics table after the blank line is not a point
    point = measurement_from_row(rows[0], client_cpu=0.25, stable=True, server_stats=True)
    assert (point.concurrency, point.throughput) == (16, 271.049)
    assert point.p50_ms == pytest.approx(49.591) and point.p99_ms == pytest.approx(141.337)
    assert point.server_queue_ms == pytest.approx(20.765)
    assert point.server_compute_ms == pytest.approx((196 + 33999 + 1250) / 1000)
    plain = measurement_from_row(rows[0], client_cpu=0.25, stable=True, server_stats=False)
    assert plain.server_queue_ms is None and plain.server_compute_ms is None
    with pytest.raises(ValueError, match="not a perf_analyzer CSV"):
        parse_csv("a,b\n1,2\n")


def test_perf_analyzer_runs_its_stable_window_method_and_exports_csv(tmp_path: Path) -> None:
    install = PerfAnalyzer(tmp_path / "perf_analyzer", tmp_path / "lib")
    load = Load(2000, 25, 10, shapes={"tokens": [5, 4]})
    argv = perf_analyzer_argv(
        install, load, url="http://127.0.0.1:8000", model="mlp", concurrency=16, csv_path=tmp_path / "p.csv"
    )
    text = " ".join(argv)
    assert "-u 127.0.0.1:8000" in text and "-m mlp" in text and "-i http" in text
    assert "--concurrency-range 16:16" in text and "-p 2000" in text and "-s 25" in text
    assert "--max-trials 10" in text and f"-f {tmp_path / 'p.csv'}" in text and "--shape=tokens:5,4" in text
    assert install.env()["LD_LIBRARY_PATH"].split(":")[0] == str(tmp_path / "lib")


def test_a_missing_perf_analyzer_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PerfAnalyzerMissing, match=r"bash \.ci/bootstrap"):
        find_perf_analyzer(tmp_path)


# --- the numbers ----------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def _points() -> list[Point]:
    return [
        Point(TRITON, 4, 300.0, 10, 20, 0.05, server_per_cpu_second=360.0),
        Point(UNBATCHED, 4, 150.0, 20, 40, 0.05),
        Point(PLAIN, 4, 100.0, 30, 60, 0.04),
        Point(CEILING, 4, 400.0, 8, 9, None, batch=4, torch_threads=2, per_cpu_second=450.0),
        Point(TRITON, 1, 50.0, 10, 20, 0.05),
        Point(PLAIN, 1, 100.0, 10, 20, 0.05),
        Point(UNBATCHED, 1, 0.0, math.nan, math.nan, 0.01, error="no stable window within 25 %"),
    ]


def test_ratios_and_the_table() -> None:
    points = _points()
    assert ratio(points, TRITON, PLAIN, 4) == 3.0 and ratio(points, TRITON, CEILING, 4) == 0.75
    assert math.isnan(ratio(points, TRITON, UNBATCHED, 1))  # no throughput: no ratio, not inf
    assert math.isnan(ratio(points, TRITON, CEILING, 1))  # not measured
    assert geometric_mean_ratio(points, TRITON, PLAIN) == pytest.approx(math.sqrt(3.0 * 0.5))
    rows = table(points)
    assert rows[0][:3] == ["clients", "contender", "req/s"]
    triton_4 = rows[1]
    assert triton_4[:3] == ["4", TRITON, "300"] and triton_4[6:8] == ["3.00x", "75%"]
    assert triton_4[8:10] == ["360", "80%"]  # its requests per server CPU-second, over the ceiling's
    assert rows[4][8:10] == ["450", "100%"] and rows[2][8:10] == ["-", "-"]
    assert rows[4][-1] == "batch 4, 2 thread(s), 450 per CPU-second" and rows[4][5] == "-"
    assert rows[7][-1] == "no stable window within 25 %" and rows[7][3] == "-"


def test_the_ceiling_batch_is_what_the_clients_can_form() -> None:
    assert [ceiling_batch(c, 8) for c in (1, 4, 16)] == [1, 4, 8]
    assert ceiling_batch(16, 0) == 1


def test_the_in_process_ceiling_runs_the_model_at_that_batch(tmp_path: Path) -> None:
    model = read_repository(build_demo_repository(tmp_path))[0]
    point = in_process_point(model, concurrency=16, seconds=0.2)
    assert point.contender == CEILING and point.batch == 8 and point.throughput > 0
    assert point.torch_threads in (1, os.cpu_count())  # the faster of the two settings it tries
    assert point.per_cpu_second is not None and point.per_cpu_second > 0
    assert point.client_cpu is None and 0 < point.p50_ms <= point.p99_ms


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"levels": "1,x"}, "--concurrency"),
        ({"levels": "0"}, "--concurrency"),
        ({"levels": "1,1000"}, "--concurrency"),
        ({"window_ms": 10}, "--window-ms"),
        ({"stability_pct": 0}, "--stability"),
        ({"max_trials": 2}, "--max-trials"),
        ({"model": "resnet"}, "--model"),
        ({"url": "127.0.0.1:8000"}, "--model"),
        ({"url": "127.0.0.1:8000", "model": "m", "search": True}, "--search"),
        ({"write": True}, "--p99-ms/--write"),
        ({"search": True, "write": True}, "--write"),
        ({"search": True, "p99_ms": -1.0}, "--p99-ms"),
        ({"search": True, "space": ("8,0", "100", "1", None)}, "--search-batch"),
        ({"search": True, "space": ("8", "100", "1", "x")}, "--search-threads"),
    ],
)
def test_bad_requests_are_refused_before_anything_starts(changes: dict[str, object], field: str) -> None:
    request: dict[str, object] = {
        "url": None,
        "repository": None,
        "model": None,
        "levels": "1,4",
        "window_ms": 1000,
        "stability_pct": 25.0,
        "max_trials": 5,
        "out": Path("out"),
    }
    with pytest.raises(InvalidInput) as caught:
        BenchRequest(**{**request, **changes}).checked()  # type: ignore[arg-type]
    assert caught.value.field == field


def test_parse_concurrency() -> None:
    assert parse_concurrency("1,4,16") == [1, 4, 16]


# --- the search --------------------------------------------------------------------------------------------


def test_the_best_trial_is_the_fastest_within_the_p99_target() -> None:
    a, b, c = Candidate(8, 100, 1, 1), Candidate(16, 2000, 1, 2), Candidate(32, 2000, 2, 1)
    trials = [
        Trial(a, Point(TRITON, 16, 500, 10, 30, 0.1)),
        Trial(b, Point(TRITON, 16, 800, 20, 60, 0.1)),
        Trial(c, Point(TRITON, 16, 900, 0, math.nan, 0.1, error="perf_analyzer exited with 99")),
    ]
    assert best_trial(trials, None) is trials[1]
    assert best_trial(trials, 50.0) is trials[0]
    assert best_trial(trials, 5.0) is None


def test_a_candidate_config_keeps_the_model_and_sets_threads_by_backend(tmp_path: Path) -> None:
    build_demo_repository(tmp_path / "libtorch", target="pytorch_libtorch")
    libtorch = read_repository(tmp_path / "libtorch")[0]
    config = candidate_config(libtorch.config, Candidate(16, 2000, 2, 1))
    assert config.max_batch_size == 16 and config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert (
        config.instance_group[0].count == 2
        and config.instance_group[0].kind == libtorch.config.instance_group[0].kind
    )
    assert config.parameters["INTRA_OP_THREAD_COUNT"].string_value == "1"
    assert list(config.input) == list(libtorch.config.input) and config.platform == "pytorch_libtorch"
    # Served by the CPU Triton here, the same setting reaches the python model under its own name.
    python = read_repository(to_python_target(tmp_path / "libtorch", tmp_path / "python"))[0]
    assert (
        candidate_config(python.config, Candidate(8, 0, 1, 2)).parameters["torch_threads"].string_value == "2"
    )
    with pytest.raises(InvalidInput):
        candidate_config(libtorch.config, Candidate(0, 100, 1, 1))  # batching needs a batch axis


def test_write_best_rewrites_a_valid_config(tmp_path: Path) -> None:
    build_demo_repository(tmp_path)
    model = read_repository(tmp_path)[0]
    path = write_best(tmp_path, model, Candidate(32, 500, 2, 1))
    written = parse_config(path.read_text(), folder="demo")
    assert written.max_batch_size == 32 and written.instance_group[0].count == 2
    assert written.parameters["torch_threads"].string_value == "1"


def test_models_build_takes_the_batching_flags(tmp_path: Path) -> None:
    torchscript = tmp_path / "m.pt"
    torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.randn(1, 4)).save(str(torchscript))  # type: ignore[no-untyped-call]
    argv = ["models", "build", "--torchscript", str(torchscript), "--name", "m", "--input", "x:FP32:4"]
    argv += ["--output", "y:FP32:2", "--max-batch-size", "16", "--out", str(tmp_path / "repo")]
    flags = ["--preferred-batch-size", "8", "--preferred-batch-size", "16", "--max-queue-delay-us", "3000"]
    assert main([*argv, *flags, "--instances", "2", "--torch-threads", "1"]) == 0
    config = read_repository(tmp_path / "repo")[0].config
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 3000
    assert config.instance_group[0].count == 2 and config.parameters["torch_threads"].string_value == "1"


def test_the_unbatched_variant_differs_only_in_batching(tmp_path: Path) -> None:
    build_demo_repository(tmp_path)
    variant = add_unbatched_variant(tmp_path, "demo")
    models = {m.name: m for m in read_repository(tmp_path)}
    original, twin = models["demo"].config, models[variant].config
    assert not twin.HasField("dynamic_batching") and original.HasField("dynamic_batching")
    assert twin.max_batch_size == original.max_batch_size and list(twin.input) == list(original.input)


# --- the plain app ---------------------------------------------------------------------------------------


def test_the_plain_app_reads_and_writes_kserve_binary_tensors() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[1, 2]], dtype=np.int64)
    header = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
            {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    text = json.dumps(header).encode()
    parsed, arrays = decode_request(text + x.tobytes(), len(text))
    assert parsed == header and np.array_equal(arrays["x"], x) and np.array_equal(arrays["ids"], ids)
    body, length = encode_response("m", 1, {"y": x, "z": ids}, header)  # z not requested: not sent
    assert length is not None
    answer = json.loads(body[:length])
    assert [o["name"] for o in answer["outputs"]] == ["y"]
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    assert struct.unpack("<6f", body[length:]) == tuple(x.reshape(-1))
    as_json, none = encode_response("m", 1, {"y": x}, {"inputs": []})
    assert none is None and json.loads(as_json)["outputs"][0]["data"] == x.reshape(-1).tolist()


@pytest.mark.real_server
def test_the_plain_app_answers_as_triton_does(served: LocalRuntime, tmp_path: Path) -> None:
    """Same inputs, same outputs: the plain app and Triton serve the same TorchScript (ids included)."""
    for model in (m for m in served.models if m.name in ("ranker", "sequence")):
        inputs = generate_inputs(model, batch=3)
        log = tmp_path / f"{model.name}.log"
        with BaselineServer(served.repository, model.name, log) as plain, TritonClient(plain.url) as client:
            from_plain = client.infer(model.name, inputs)
        with TritonClient(served.http_url) as client:
            from_triton = client.infer(model.name, inputs)
        expected = run_reference(model, inputs)
        for name, want in expected.items():
            assert from_plain[name].dtype == want.dtype and np.array_equal(from_plain[name], want)
            np.testing.assert_allclose(from_triton[name], from_plain[name], atol=1e-5)


# --- a short real run, end to end --------------------------------------------------------------------------


@pytest.mark.real_server
def test_a_short_run_measures_four_contenders_and_searches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    perf_or_unavailable()
    repository = tmp_path / "repository"
    # The tiny demo keeps this short; its config as `models build` writes it.
    module, example = torch.nn.Sequential(torch.nn.Linear(16, 4)).eval(), [torch.randn(2, 16)]
    options = ModelOptions(dynamic_batching=DynamicBatching(max_queue_delay_us=100))
    build_model(module, example, name="tiny", repository=repository, options=options)
    argv = ["bench", "--repository", str(repository), "--concurrency", "1,2", "--window-ms", "500"]
    argv += ["--stability", "100", "--max-trials", "5", "--out", str(tmp_path / "out")]
    argv += ["--search", "--search-batch", "4", "--search-delay-us", "0", "--search-instances", "1"]
    argv += ["--search-threads", "1,2", "--write", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert json.loads(captured.out) == report  # --json: the report on stdout, progress on stderr
    assert "in-process" in captured.err and "search batch<=4" in captured.err
    contenders = [(p["contender"], p["concurrency"]) for p in report["points"]]
    assert contenders == [(c, n) for n in (1, 2) for c in (TRITON, UNBATCHED, PLAIN, CEILING)]
    assert all(p["throughput"] > 0 and not p["error"] for p in report["points"])
    served_points = [p for p in report["points"] if p["contender"] != CEILING]
    assert all(0 < p["client_cpu"] <= 1 for p in served_points)
    assert all(p["server_compute_ms"] is not None for p in served_points if p["contender"] != PLAIN)
    assert report["ratios"][f"{TRITON}/{PLAIN}"]["2"] > 0
    png = (tmp_path / "out" / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    # The search tried both thread counts and wrote the better one into the repository, validated.
    trials = report["search"]["trials"]
    assert [t["torch_threads"] for t in trials] == [1, 2] and all(t["throughput"] > 0 for t in trials)
    written = read_repository(repository)[0].config
    best = report["search"]["best"]
    assert written.max_batch_size == 4 and written.dynamic_batching.max_queue_delay_microseconds == 0
    assert written.parameters["torch_threads"].string_value == str(best["torch_threads"])


# --- the plan benchmark ------------------------------------------------------------------------------------


def test_plan_stacks_get_n_distinct_services() -> None:
    config = {
        "config": {
            "inferstack:services": [{"name": "demo", "models": ["demo"], "prefix": "demo", "minReplicas": 1}]
        }
    }
    services = with_services(config, 3)["config"]["inferstack:services"]
    assert [s["name"] for s in services] == ["svc0", "svc1", "svc2"]
    assert len({s["prefix"] for s in services}) == 3 and all(s["minReplicas"] == 1 for s in services)
    with pytest.raises(InvalidInput):
        with_services({"config": {}}, 2)


def test_growth_is_judged_per_added_service() -> None:
    linear = [PlanRun(1, 2.0, 100, 0), PlanRun(10, 2.9, 100, 0), PlanRun(100, 11.9, 100, 0)]
    assert marginal_seconds(linear) == pytest.approx([0.1, 0.1])
    assert is_linear(linear)
    quadratic = [PlanRun(1, 2.0, 100, 0), PlanRun(10, 2.9, 100, 0), PlanRun(100, 92.0, 100, 0)]
    assert not is_linear(quadratic)  # 0.99 s per service after 0.1 s


@pytest.mark.real_server
def test_a_real_plan_benchmark_counts_the_services_it_adds() -> None:
    stacks = Path(__file__).resolve().parents[2] / "stacks"
    runs = plan_benchmark(stacks, sizes=(1, 2), repeats=1, settings=DEPLOYER)
    assert [r.services for r in runs] == [1, 2]
    assert runs[1].resources > runs[0].resources > 0  # the second service is really planned
    assert all(r.seconds > 0 and r.peak_rss_mb > 50 for r in runs)  # python + pulumi alone exceed 50 MB


# --- the served path ------------------------------------------------------------------------------------


def test_the_python_model_gives_torch_half_the_cores_per_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless the config says otherwise: torch's default (every core, spinning) starved Triton's threads."""
    import importlib
    import types

    # The module runs inside Triton's stub; only its pure helper is called here.
    monkeypatch.setitem(
        sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils")
    )
    model_py = importlib.import_module("inferstack.serving.models.triton_python_model")
    monkeypatch.setattr(model_py.os, "cpu_count", lambda: 8)
    assert model_py.torch_threads({"instance_group": [{"count": 1}]}) == 4
    assert model_py.torch_threads({"instance_group": [{"count": 2}, {"count": 2}]}) == 1
    assert model_py.torch_threads({"instance_group": [{"count": 16}]}) == 1
    assert model_py.torch_threads({"parameters": {"torch_threads": {"string_value": "3"}}}) == 3
    monkeypatch.setattr(model_py.os, "cpu_count", lambda: 2)
    assert model_py.torch_threads({}) == 1


def test_rounds_report_the_median_and_alternate_order() -> None:
    rounds = [
        Point(TRITON, 4, 300.0, 1, 2, 0.1),
        Point(TRITON, 4, 100.0, 1, 2, 0.1),
        Point(TRITON, 4, 200.0, 1, 2, 0.1),
        Point(PLAIN, 4, 0.0, math.nan, math.nan, 0.1, error="no stable window within 25 %"),
        Point(PLAIN, 4, 90.0, 1, 2, 0.1),
    ]
    chosen = {p.contender: p for p in medians(rounds)}
    assert chosen[TRITON].throughput == 200.0
    assert chosen[PLAIN].error  # of two rounds the lower one, and a failed round ranks lowest


def test_torch_threads_must_be_positive(tmp_path: Path) -> None:
    module, example = torch.nn.Linear(4, 2).eval(), [torch.randn(2, 4)]
    with pytest.raises(InvalidInput) as caught:
        build_model(module, example, name="m", repository=tmp_path, options=ModelOptions(torch_threads=0))
    assert caught.value.field == "torch_threads"


def test_variable_axes_get_a_fixed_length_for_perf_analyzer(tmp_path: Path) -> None:
    from tests.serving.conftest import build_sequence

    build_sequence(tmp_path)
    model = read_repository(tmp_path)[0]
    assert variable_shapes(model) == {"tokens": [8, 4]}  # batch axis excluded, -1 -> 8
    assert variable_shapes(read_repository(build_demo_repository(tmp_path / "demo"))[0]) == {}


@pytest.mark.real_server
def test_no_triton_at_the_url_is_said_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    perf_or_unavailable()
    assert main(["bench", "--url", "127.0.0.1:1", "--model", "ranker"]) == 1
    assert "no Triton answering at 127.0.0.1:1" in capsys.readouterr().err


def test_the_cpu_time_of_a_process_group_is_counted() -> None:
    """A child in its own session burns CPU: the group's count grows by about what it used."""
    burn = (
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(group_cpu_seconds(child.pid).values()) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(group_cpu_seconds(child.pid)) == [child.pid]
        assert 0.3 <= group_cpu_seconds(child.pid)[child.pid] < 5
    finally:
        child.kill()
        child.wait()
    assert group_cpu_seconds(child.pid) == {}  # nothing left in the group
