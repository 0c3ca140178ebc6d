"""Faults on loopback with the real Triton: a hostile request, dead and hung replicas, a drain.

Every load here is small and fixed in time (2 cores shared): a few closed-loop client threads
for a few seconds, each answer compared with the one the healthy server gave for the same input.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.answers import compare
from inferstack.serving.client.client import Protocol, TritonClient, TritonUnavailable
from inferstack.serving.local.balancer import retries
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.processes import SMOKE_TOLERANCE, RuntimeFailure, group_members
from inferstack.serving.local.runtime import LocalRuntime
from tests.conftest import require_tool

pytestmark = pytest.mark.real_server

# The request that aborts Triton 2.51: JSON data, declared shape 8 x 2**40 FP32 (32 TiB).
HOSTILE = json.dumps(
    {"inputs": [{"name": "features", "shape": [8, 2**40], "datatype": "FP32", "data": [1.0] * 16}]}
).encode()
FEATURES = [np.random.default_rng(seed).standard_normal((1, 16)).astype(np.float32) for seed in range(8)]


def post(
    url: str, body: bytes, timeout_s: float = 20.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def infer_ok(url: str) -> bool:
    with TritonClient(url, timeout_s=10) as client:
        answer = client.infer("demo", {"features": FEATURES[0]})
    return bool(np.isclose(answer["probabilities"].sum(), 1.0, atol=1e-5))


def child(runtime: LocalRuntime, name: str) -> Any:
    return next(c for c in runtime.children if c.name == name)


def ready(url: str) -> bool:
    with TritonClient(url, timeout_s=2) as client:
        return client.is_ready("demo")


def kill(runtime: LocalRuntime, name: str) -> None:
    process = child(runtime, name).process
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def heal(runtime: LocalRuntime, timeout_s: float = 90.0) -> list[str]:
    """Supervise until every replica is back and ready; the supervisor's events."""
    events: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += runtime.supervise()
        if all(c.alive() for c in runtime.children) and all(ready(url) for url in runtime.replica_http_urls):
            return events
        time.sleep(0.25)
    raise AssertionError(f"the runtime did not heal within {timeout_s:.0f} s: {events}")


# --- item 1: hostile requests -----------------------------------------------------------------------


def test_the_crashing_request_is_refused_at_the_front_and_triton_keeps_serving(served: LocalRuntime) -> None:
    status, body = post(f"{served.front_url}/v2/models/demo/infer", HOSTILE)
    assert status == 400 and "demo.features.shape" in json.loads(body)["error"]
    status, body = post(f"{served.front_url}/v2/models/demo/infer", b"x" * 4096)
    assert status == 400 and "JSON" in json.loads(body)["error"]
    assert all(c.alive() for c in served.children)
    assert infer_ok(served.front_url) and infer_ok(served.http_url)


def test_an_oversized_body_is_refused_unread(served: LocalRuntime) -> None:
    big = b"{" + b" " * (65 << 20) + b"}"  # over the 64 MiB data limit plus the header allowance
    status, body = post(f"{served.front_url}/v2/models/demo/infer", big)
    assert status == 413 and "limit" in json.loads(body)["error"]
    assert infer_ok(served.front_url)


def test_the_client_refuses_a_hostile_shape_before_sending(served: LocalRuntime) -> None:
    hostile = np.broadcast_to(np.float32(1.0), (8, 2**40))  # a view: no memory behind it
    for url in (served.http_url, served.grpc_url):
        protocol = "http" if url.startswith("http") else "grpc"
        with TritonClient(url, protocol=protocol) as client:  # type: ignore[arg-type]
            with pytest.raises(InvalidInput) as caught:
                client.infer("demo", {"features": hostile})
            assert caught.value.field == "demo.features.shape" and "[1..8, 16]" in str(caught.value)
            assert client.infer("demo", {"features": FEATURES[1]})["probabilities"].shape == (1, 4)
    assert all(c.alive() for c in served.children)


# --- item 2: supervision ----------------------------------------------------------------------------


@pytest.mark.usefixtures("triton_present")
def test_triton_2_51_aborts_on_it_and_the_supervisor_names_it_and_restarts_it(tmp_path: Path) -> None:
    """What the front protects against, documented on the real binary, and the supervisor's answer."""
    with LocalRuntime(build_demo_repository(tmp_path / "repo"), work_dir=tmp_path / "work") as runtime:
        first = child(runtime, "triton-0")
        with pytest.raises(OSError):  # straight at Triton, around the front: it dies mid-request
            post(f"{runtime.http_url}/v2/models/demo/infer", HOSTILE)
        first.process.wait(timeout=30)
        stubs = group_members(first.process.pid)
        events = heal(runtime)
        assert "triton-0" in events[0] and "SIGABRT" in events[0] and "bad_alloc" in events[0], events[0]
        assert "restarting in 1 s" in events[0] and "triton-0 restarted (restart 1 of 5)" in events[1]
        assert not set(stubs) & set(group_members(first.process.pid))
        assert child(runtime, "triton-0").process.pid != first.process.pid
        assert infer_ok(runtime.front_url)


@pytest.mark.usefixtures("triton_present")
def test_stop_cleans_up_after_a_killed_leader(tmp_path: Path) -> None:
    # Triton reading S3 itself (no node cache): the path where it copies the models into temp folders.
    runtime = LocalRuntime(build_demo_repository(tmp_path / "repo"), model_cache=False).start()
    try:
        triton = child(runtime, "triton-0")
        work_dir = runtime.work_dir
        os.kill(triton.process.pid, signal.SIGKILL)
        triton.process.wait(timeout=10)
        # What the old stop() left: the stubs (in Triton's group), whose segments and model copy
        # stay while they run. Whether a stub unlinks its segment before it is killed is a race.
        assert group_members(triton.process.pid), "the python-backend stubs should outlive a SIGKILLed Triton"
        copies = set(triton.model_copies)
        assert copies and all(folder.exists() for folder in copies)
    finally:
        runtime.stop()
    assert group_members(triton.process.pid) == []
    assert list(Path("/dev/shm").glob(f"{triton.shm_prefix}*")) == []
    assert not any(folder.exists() for folder in copies), copies
    assert work_dir is not None and not work_dir.exists()


@pytest.mark.usefixtures("triton_present")
def test_the_supervisor_gives_up_after_bounded_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inferstack.serving.local.runtime._RESTART_BACKOFF_S", (0.0,))
    with LocalRuntime(build_demo_repository(tmp_path / "repo"), work_dir=tmp_path / "work") as runtime:
        kill(runtime, "triton-0")
        assert "killed by SIGKILL" in runtime.supervise()[0]  # restart due at once
        assert runtime.supervise() == ["triton-0 restarted (restart 1 of 1)"]
        kill(runtime, "triton-0")
        with pytest.raises(
            RuntimeFailure, match=r"triton-0 \(pid \d+\) killed by SIGKILL(.|\n)*gave up after 1"
        ):
            runtime.supervise()
        kill(runtime, "moto")
        with pytest.raises(RuntimeFailure, match=r"moto \(pid \d+\) killed by SIGKILL"):
            runtime.supervise()


# --- items 3 and 4: replicas behind HAProxy, replica loss under load ---------------------------------


@dataclass
class Load:
    """Closed-loop load: ``threads`` clients, each its own TritonClient, every answer checked."""

    urls: list[str]
    expected: list[np.ndarray]
    protocol: Protocol = "http"
    sent: int = 0
    failed: int = 0
    wrong: int = 0
    retried: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self, seconds: float, *, threads: int = 3, during: Callable[[float], None] | None = None
    ) -> float:
        """Run for ``seconds``; ``during(elapsed)`` is called from this thread meanwhile. Requests/s."""
        stop = time.monotonic() + seconds

        def loop(worker: int) -> None:
            with TritonClient(self.urls, protocol=self.protocol, timeout_s=3) as client:
                number = worker
                while time.monotonic() < stop:
                    index = number % len(FEATURES)
                    number += 1
                    try:
                        answer = client.infer("demo", {"features": FEATURES[index]})["probabilities"]
                        # batched with others, float sums may round differently: the smoke's tolerance
                        ok = compare({"p": self.expected[index]}, {"p": answer}) <= SMOKE_TOLERANCE
                        error = ""
                    except (TritonUnavailable, RuntimeError) as caught:
                        ok, error = False, str(caught)
                    with self.lock:
                        self.sent += 1
                        self.failed += bool(error)
                        self.wrong += not ok and not error
                        if error and len(self.errors) < 5:
                            self.errors.append(error)
                with self.lock:
                    self.retried += client.retries

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        start = time.monotonic()
        for worker in workers:
            worker.start()
        while time.monotonic() < stop:
            if during:
                during(time.monotonic() - start)
            time.sleep(0.1)
        rate = self.sent / (time.monotonic() - start)
        for worker in workers:
            worker.join(timeout=30)
        return rate

    def report(self) -> str:
        return f"sent {self.sent}, retried {self.retried}, failed {self.failed}, wrong {self.wrong} {self.errors}"


def two_replicas(factory: pytest.TempPathFactory, name: str) -> Iterator[LocalRuntime]:
    require_tool("haproxy")
    repository = build_demo_repository(factory.mktemp("repository"))
    with LocalRuntime(repository, work_dir=factory.mktemp(name), replicas=2) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    yield from two_replicas(tmp_path_factory, "replicated")


@pytest.fixture(scope="module")
def expected(replicated: LocalRuntime) -> list[np.ndarray]:
    with TritonClient(replicated.replica_http_urls[0]) as client:
        return [client.infer("demo", {"features": f})["probabilities"] for f in FEATURES]


def balancer_retries(runtime: LocalRuntime) -> dict[str, int]:
    with urllib.request.urlopen(runtime.balancer_stats_url, timeout=5) as answer:
        return retries(answer.read().decode())


def disrupt(runtime: LocalRuntime, name: str, sig: signal.Signals, at_s: float) -> Callable[[float], None]:
    """A ``during`` hook: send ``sig`` to replica ``name`` once, ``at_s`` into the run; supervise throughout."""
    sent = []

    def during(elapsed: float) -> None:
        if elapsed >= at_s and not sent:
            os.kill(child(runtime, name).process.pid, sig)
            sent.append(sig)
        runtime.supervise()

    return during


def test_replicas_serve_the_same_repository_behind_haproxy(replicated: LocalRuntime) -> None:
    assert len(replicated.replica_http_urls) == 2 and replicated.balanced_http_url
    config = (Path(str(replicated.work_dir)) / "haproxy.cfg").read_text()
    assert (
        "option httpchk GET /v2/health/ready" in config and "retry-on conn-failure empty-response" in config
    )
    served_by = set()
    for url in replicated.replica_http_urls:
        with TritonClient(url) as client:
            assert client.is_ready("demo")
            served_by.add(client.model_metadata("demo")["versions"][0])
    assert served_by == {"1"}
    assert infer_ok(replicated.balanced_http_url) and infer_ok(replicated.front_url)


def test_the_second_replica_finds_the_models_on_the_node(replicated: LocalRuntime) -> None:
    """Both replicas fill through one node cache: the first downloads, the second downloads nothing and
    links the very same blobs (one copy of the bytes on disk)."""
    first, second = replicated.replica_starts
    assert first.downloaded_bytes > 0 and second.downloaded_bytes == 0
    work = Path(str(replicated.work_dir))
    models = [work / f"triton-{i}-models" / "demo" / "1" / "model.pt" for i in (0, 1)]
    assert models[0].stat().st_ino == models[1].stat().st_ino
    assert any(
        p.stat().st_ino == models[0].stat().st_ino for p in (work / "model-cache" / "blobs").glob("*/*")
    )


@pytest.mark.parametrize("through", ["balancer", "client"])
def test_a_replica_killed_under_load_costs_no_request(
    replicated: LocalRuntime, expected: list[np.ndarray], through: str
) -> None:
    urls = [replicated.front_url] if through == "balancer" else replicated.replica_http_urls
    load = Load(urls, expected)
    before = balancer_retries(replicated)
    load.run(6.0, during=disrupt(replicated, "triton-1", signal.SIGKILL, at_s=2.0))
    after = balancer_retries(replicated)
    print(f"SIGKILL through the {through}: {load.report()}; HAProxy {before} -> {after}")
    assert load.sent > 50 and load.failed == 0 and load.wrong == 0, load.report()
    heal(replicated)


@pytest.fixture(scope="module")
def killed_often(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    """Its own runtime: each replica is killed five times, all the restarts the supervisor allows."""
    yield from two_replicas(tmp_path_factory, "killed")


def test_kill_9_of_a_replica_five_times_per_protocol_loses_no_request(killed_often: LocalRuntime) -> None:
    """What ``local up --replicas 2`` offers: HTTP through the gateway, gRPC through HAProxy (per
    connection, so a killed replica's in-flight gRPC calls fail and the client sends them again)."""
    with TritonClient(killed_often.replica_http_urls[0]) as client:
        expected = [client.infer("demo", {"features": f})["probabilities"] for f in FEATURES]
    runs, client_retries = [], {"http": 0, "grpc": 0}
    balancer_before = balancer_retries(killed_often)
    for protocol, url in (("http", killed_often.front_url), ("grpc", killed_often.balanced_grpc_url)):
        for run in range(5):
            victim = f"triton-{(run + (protocol == 'grpc')) % 2}"
            load = Load([url], expected, protocol=protocol)
            load.run(4.0, during=disrupt(killed_often, victim, signal.SIGKILL, at_s=1.5))
            client_retries[protocol] += load.retried
            runs.append(f"{protocol} run {run + 1}, {victim} killed: {load.report()}")
            print(runs[-1])
            assert load.sent > 20 and load.failed == 0 and load.wrong == 0, runs
            heal(killed_often)
    balancer = balancer_retries(killed_often)
    print(f"client retries {client_retries}; HAProxy {balancer_before} -> {balancer}")
    # The kills did cut gRPC calls in flight (HAProxy balances gRPC per connection): the client's
    # bounded retry is what saved them. HTTP requests are retried by HAProxy or the client.
    assert client_retries["grpc"] > 0, runs


def test_a_replica_drained_with_sigterm_under_load_costs_no_request(
    replicated: LocalRuntime, expected: list[np.ndarray]
) -> None:
    load = Load([replicated.front_url], expected)
    before = balancer_retries(replicated)
    load.run(6.0, during=disrupt(replicated, "triton-0", signal.SIGTERM, at_s=2.0))
    print(
        f"SIGTERM through the balancer: {load.report()}; HAProxy {before} -> {balancer_retries(replicated)}"
    )
    assert load.sent > 50 and load.failed == 0 and load.wrong == 0, load.report()
    drained = heal(replicated)[0]
    assert drained.startswith("triton-0") and "Signal (15) received" in drained, drained


def test_a_hung_replica_keeps_throughput_within_half_of_normal(
    replicated: LocalRuntime, expected: list[np.ndarray]
) -> None:
    normal = Load(replicated.replica_http_urls, expected).run(4.0)
    hung = child(replicated, "triton-0")  # the first endpoint: a client that always starts there stalls
    load = Load(replicated.replica_http_urls, expected)
    os.kill(hung.process.pid, signal.SIGSTOP)
    try:
        rate = load.run(30.0)
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
    print(f"SIGSTOP 30 s through the client: {load.report()}; {rate:.0f} req/s against {normal:.0f} normally")
    assert load.failed == 0 and load.wrong == 0, load.report()
    assert rate >= 0.5 * normal, f"{rate:.0f} req/s hung against {normal:.0f} normally"


# --- item 6: a publish cut off by the network ---------------------------------------------------------


@pytest.mark.usefixtures("triton_present")
def test_a_publish_cut_off_by_a_stalled_s3_leaves_the_served_version_serving(tmp_path: Path) -> None:
    """moto itself stops answering (SIGSTOP) after version 2's first file: the next upload times out on
    the wire, the rollback is retried until S3 answers again, and Triton, reloading, still serves 1."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    from inferstack.serving.models.build import build_model
    from inferstack.serving.models.publish import S3Location, publish_repository, verify_published
    from inferstack.serving.models.repository import demo_model
    from inferstack.serving.models.specs import ModelOptions

    with LocalRuntime(build_demo_repository(tmp_path / "repo"), work_dir=tmp_path / "work") as runtime:
        served = Path(str(runtime.work_dir)) / "repository"  # what the runtime published (python target)
        module, example = demo_model()
        options = ModelOptions(dynamic_batching=None)
        build_model(module, example, name="demo", repository=served, version=2, options=options)
        moto = child(runtime, "moto").process
        s3 = runtime.s3_client()
        quick = boto3_client(runtime, Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}))
        resumed = threading.Timer(10.0, os.killpg, (moto.pid, signal.SIGCONT))

        def stall_after_first_file(line: str) -> None:
            if line.endswith("uploaded demo/2/model.pt"):
                os.killpg(moto.pid, signal.SIGSTOP)  # moto_server serves from a child
                resumed.start()

        location = S3Location(runtime.bucket, runtime.prefix)
        start = time.monotonic()
        try:
            with pytest.raises(BotoCoreError) as caught:
                publish_repository(served, location, s3=quick, progress=stall_after_first_file)
        finally:
            resumed.join(timeout=10)
            os.killpg(moto.pid, signal.SIGCONT)
        assert time.monotonic() - start < 40
        assert "removed the 2 object(s)" in "\n".join(caught.value.__notes__)
        time.sleep(1.0)  # what the stalled server still had queued has landed by now
        listed = s3.list_objects_v2(Bucket=runtime.bucket, Prefix=f"{runtime.prefix}/demo/2/").get("KeyCount")
        assert listed == 0, "version 2 is half there: Triton's latest-version policy would pick it"
        assert verify_published(location, s3=s3) == []
        # The admin API, locked as in the cluster: with the key `local up` prints.
        load = f"{runtime.http_url}/v2/repository/models/demo/load"
        status, body = post(load, b"{}", headers=runtime.admin_headers)
        assert status == 200, body
        with TritonClient(runtime.front_url) as client:
            assert client.model_metadata("demo")["versions"] == ["1"]
        assert infer_ok(runtime.front_url)


def boto3_client(runtime: LocalRuntime, config: Any) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=runtime.s3_endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=config,
    )
