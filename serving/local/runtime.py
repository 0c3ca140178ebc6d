"""The embedded runtime: emulated S3 (moto server) + the real Triton that ships in nvidia-pytriton.

Same path as the cluster, on loopback: a model repository is published to S3; before each Triton starts,
the node-local model cache (``infra/model_cache.py``, the pod's init container) fetches the served
versions into the work directory's ``model-cache`` and assembles the replica's own repository folder,
which Triton loads from local disk. With ``model_cache=False`` Triton reads
``s3://http://127.0.0.1:PORT/bucket/prefix`` itself, as it did before the cache. Starting never hangs:
a dead process or a model that fails to load ends the wait at once, with Triton's own log lines.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inferstack.components.admin_api import ADMIN_KEY_HEADER, restriction_flags
from inferstack.infra.errors import InvalidInput
from inferstack.infra.prefixes import check_prefix
from inferstack.serving.client.answers import compare
from inferstack.serving.client.client import Protocol, TritonClient
from inferstack.serving.client.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    limits_from_config,
    write_limits,
)
from inferstack.serving.local.balancer import Replica, haproxy_config
from inferstack.serving.local.processes import (
    DUMMY_AWS,
    LOAD_FAILURE_MARKERS,
    SMOKE_TOLERANCE,
    STUB_FAILURE,
    ChildProcess,
    RuntimeFailure,
    TritonInstall,
    check_port,
    find_haproxy_or_fail,
    find_triton,
    free_port,
    local_env,
    signal_name,
    signals_deferred,
    start_child,
    start_moto,
    stop_all,
    triton_backends,
    triton_env,
    wait_listening,
)
from inferstack.serving.local.records import Ports, ReplicaStart, SmokeResult
from inferstack.serving.models.precision import served_tolerance
from inferstack.serving.models.repository import generate_inputs, read_repository, run_reference
from inferstack.serving.models.specs import RepositoryModel

MAX_REPLICAS = 8  # two cores here; each replica is a whole Triton
# moto answers a ranged GET by reading the whole object and slicing it (its _handle_range_header gets the
# full value), so N ranges cost N whole reads: on the emulator one GET per object is the fast way. On S3
# the fill uses its 16 MiB ranges in parallel (one connection to S3 tops out well below a node's NIC).
EMULATOR_PART_BYTES = 1 << 40
_RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)  # like the kubelet's CrashLoopBackOff, bounded
_STABLE_AFTER_S = 60.0  # a replica that ran this long without dying starts its backoff afresh


@dataclass
class _Supervised:
    """Restart bookkeeping of one Triton replica."""

    restarts: int = 0
    due: float | None = None  # when the pending restart may run
    started: float = 0.0


@dataclass
class LocalRuntime:
    """moto S3 + real Triton on loopback, serving ``repository`` (a local model repository folder).

    ``replicas`` Tritons load the same S3 repository; above one, HAProxy balances them. In front of
    it all, the gateway (``front_url``) refuses requests that do not fit the models' configs.
    ``http_url``/``grpc_url``/``metrics_url`` are the first replica's own endpoints.

    Use as a context manager: ``with LocalRuntime(repo) as runtime: ...``; call ``supervise()``
    from the starting thread while serving, to restart dead replicas and hear about it.
    """

    repository: Path
    work_dir: Path | None = None
    ports: Ports = field(default_factory=Ports)
    bucket: str = "inferstack-models"
    prefix: str = "models"
    startup_timeout_s: float = 180.0
    progress: Callable[[str], None] | None = None
    triton_args: Sequence[str] = ()  # more server flags: tracing, logging
    replicas: int = 1
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Triton's admin APIs answer only this key, as in the cluster (letters and digits: it sits in a flag).
    admin_key: str = field(default_factory=lambda: secrets.token_hex(16))
    model_cache: bool = True  # through the node-local cache (as the cluster), or Triton straight from S3
    model_cache_gib: float = 20.0
    model_cache_dir: Path | None = None  # None: <work_dir>/model-cache

    models: list[RepositoryModel] = field(default_factory=list, init=False)
    children: list[ChildProcess] = field(default_factory=list, init=False)
    s3_endpoint: str = field(default="", init=False)
    model_repository_uri: str = field(default="", init=False)
    http_url: str = field(default="", init=False)
    grpc_url: str = field(default="", init=False)
    metrics_url: str = field(default="", init=False)
    front_url: str = field(default="", init=False)
    balanced_http_url: str = field(default="", init=False)
    balanced_grpc_url: str = field(default="", init=False)
    balancer_stats_url: str = field(default="", init=False)
    replica_http_urls: list[str] = field(default_factory=list, init=False)
    replica_grpc_urls: list[str] = field(default_factory=list, init=False)
    replica_metrics_urls: list[str] = field(default_factory=list, init=False)
    replica_starts: list[ReplicaStart] = field(default_factory=list, init=False)
    _owns_work_dir: bool = field(default=False, init=False)
    _supervised: dict[str, _Supervised] = field(default_factory=dict, init=False)
    _token: str = field(default_factory=lambda: uuid.uuid4().hex[:12], init=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.replicas, bool)
            or not isinstance(self.replicas, int)
            or not 1 <= self.replicas <= MAX_REPLICAS
        ):
            raise InvalidInput("replicas", self.replicas, f"an integer from 1 to {MAX_REPLICAS}")
        check_prefix(self.prefix)
        if not isinstance(self.model_cache_gib, int | float) or not self.model_cache_gib > 0:
            raise InvalidInput("model_cache_gib", self.model_cache_gib, "a size in GiB above 0")
        if not (self.admin_key.isascii() and self.admin_key.isalnum() and len(self.admin_key) >= 16):
            raise InvalidInput("admin_key", "<hidden>", "16 or more ASCII letters and digits")

    @property
    def admin_headers(self) -> dict[str, str]:
        """What a call to a replica's admin API (load, unload, log settings) carries."""
        return {ADMIN_KEY_HEADER: self.admin_key}

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def start(self) -> LocalRuntime:
        # Everything that can be checked is checked before the first process starts.
        self.models = read_repository(self.repository)
        triton = find_triton()
        haproxy = find_haproxy_or_fail() if self.replicas > 1 else ""
        # The user's ports first (Ports refused any given twice), so that no free port picked is one of them.
        ports = {n: check_port(v, field=f"{n}_port") for n, v in self.ports.items() if v is not None}

        def fresh() -> int:
            # Each probe socket is closed before the next: the kernel may hand the same port out again.
            while (port := free_port()) in ports.values():
                pass
            return port

        for name, value in self.ports.items():
            if value is None:
                ports[name] = fresh()
        # The user's http port is the gateway's; grpc and metrics are the first replica's.
        ports["grpc-0"], ports["metrics-0"] = ports.pop("grpc"), ports.pop("metrics")
        for index in range(self.replicas):
            for kind in ("http", "grpc", "metrics"):
                if f"{kind}-{index}" not in ports:
                    ports[f"{kind}-{index}"] = fresh()
        if self.replicas > 1:
            for name in ("balanced-http", "balanced-grpc", "balancer-stats"):
                ports[name] = fresh()
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="inferstack-local-"))
            self._owns_work_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._say(f"starting emulated S3 (moto) on 127.0.0.1:{ports['s3']}")
            with signals_deferred():  # started and counted as ours in one step a Ctrl-C cannot split
                self.children.append(start_moto(self.work_dir, ports["s3"]))
            self.s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
            self._publish()
            backends = triton_backends(triton, self.work_dir)
            replicas = [self._start_triton(triton, backends, ports, index) for index in range(self.replicas)]
            for replica in replicas:
                self._wait_ready(replica)
            upstream = self.http_url
            if self.replicas > 1:
                upstream = self._start_balancer(haproxy, ports)
            self._start_gateway(ports["http"], upstream)
        except BaseException:
            self.stop(keep_work_dir=True)  # the logs it names must still be there to read
            raise
        return self

    def _launch(
        self, name: str, argv: Sequence[str], *, log: Path, env: dict[str, str], shm_prefix: str = ""
    ) -> ChildProcess:
        """Start a child and count it as ours in one step a Ctrl-C cannot split (see signals_deferred)."""
        with signals_deferred():
            child = start_child(name, argv, log=log, env=env)
            child.shm_prefix = shm_prefix
            self.children.append(child)
        return child

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        env = DUMMY_AWS
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )

    def _publish(self) -> None:
        from inferstack.serving.models.publish import S3Location, publish_repository, verify_published
        from inferstack.serving.models.repository import to_python_target

        assert self.work_dir is not None
        s3 = self.s3_client()
        s3.create_bucket(Bucket=self.bucket)
        # The CPU Triton here has no libtorch backend: serve libtorch models through the python backend.
        served = to_python_target(self.repository, self.work_dir / "repository")
        location = S3Location(self.bucket, self.prefix)
        report = publish_repository(served, location, s3=s3)
        problems = verify_published(location, s3=s3)
        if problems:
            raise RuntimeFailure(f"{location.uri} does not match its manifests: " + "; ".join(problems))
        self.model_repository_uri = f"s3://{self.s3_endpoint}/{self.bucket}/{self.prefix}"
        self._say(f"published {len(report.uploaded)} files to {location.uri}, every sha256 verified")

    def _start_triton(
        self, triton: TritonInstall, backends: Path, ports: Mapping[str, int], index: int
    ) -> ChildProcess:
        assert self.work_dir is not None
        env = triton_env(triton)
        name = f"triton-{index}"
        # Our own prefix for the python backend's /dev/shm segments: what a killed replica leaves
        # behind can be found and removed without touching any other Triton's on this machine.
        shm_prefix = f"inferstack_{self._token}_{name}_"
        http, grpc, metrics = ports[f"http-{index}"], ports[f"grpc-{index}"], ports[f"metrics-{index}"]
        started = time.monotonic()
        source, fill_s, downloaded = self._fill(name)
        argv = [
            str(triton.server),
            f"--model-repository={source}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--model-control-mode=explicit",
            *(f"--load-model={m.name}" for m in self.models),
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            # Latency quantiles per model version: what a canary's p99 is compared on.
            "--metrics-config=summary_latencies=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
            *restriction_flags(self.admin_key),
            *self.triton_args,
        ]
        self.replica_http_urls.append(f"http://127.0.0.1:{http}")
        self.replica_grpc_urls.append(f"127.0.0.1:{grpc}")
        self.replica_metrics_urls.append(f"http://127.0.0.1:{metrics}/metrics")
        self.http_url, self.grpc_url, self.metrics_url = (
            self.replica_http_urls[0],
            self.replica_grpc_urls[0],
            self.replica_metrics_urls[0],
        )
        self._say(f"starting {name} from {source}")
        child = self._launch(name, argv, log=self.work_dir / f"{name}.log", env=env, shm_prefix=shm_prefix)
        self._supervised[name] = _Supervised(started=started)
        self.replica_starts.append(ReplicaStart(name, fill_s, 0.0, downloaded))
        return child

    def _fill(self, name: str) -> tuple[str, float, int]:
        """The replica's model repository: its own folder filled through the node cache (what the pod's
        init container does), or the S3 URI without the cache; with the fill's seconds and bytes."""
        if not self.model_cache:
            return self.model_repository_uri, 0.0, 0
        from inferstack.infra.model_cache import CacheError, Credentials, ModelCache, S3Reader

        assert self.work_dir is not None
        reader = S3Reader(
            self.bucket,
            DUMMY_AWS["AWS_DEFAULT_REGION"],
            Credentials(DUMMY_AWS["AWS_ACCESS_KEY_ID"], DUMMY_AWS["AWS_SECRET_ACCESS_KEY"]),
            self.s3_endpoint,
        )
        cache = ModelCache(
            self.model_cache_dir or self.work_dir / "model-cache",
            int(self.model_cache_gib * 2**30),
            part_bytes=EMULATOR_PART_BYTES,
            progress=self.progress,
        )
        folder = self.work_dir / f"{name}-models"
        try:
            report = cache.fill(reader, self.prefix, [m.name for m in self.models], folder)
        except CacheError as error:
            raise RuntimeFailure(f"{name}: {error}") from None
        return str(folder), report.seconds, report.bytes_downloaded

    def _start_balancer(self, haproxy: str, ports: Mapping[str, int]) -> str:
        assert self.work_dir is not None
        replicas = [
            Replica(f"triton-{i}", ports[f"http-{i}"], ports[f"grpc-{i}"]) for i in range(self.replicas)
        ]
        config = self.work_dir / "haproxy.cfg"
        config.write_text(
            haproxy_config(
                replicas,
                http_port=ports["balanced-http"],
                grpc_port=ports["balanced-grpc"],
                stats_port=ports["balancer-stats"],
            )
        )
        self._say(f"starting HAProxy in front of {self.replicas} replicas")
        child = self._launch(
            "haproxy",
            [haproxy, "-W", "-db", "-f", str(config)],
            log=self.work_dir / "haproxy.log",
            env=local_env(),
        )
        wait_listening(child, ports["balanced-http"])
        self.balanced_http_url = f"http://127.0.0.1:{ports['balanced-http']}"
        self.balanced_grpc_url = f"127.0.0.1:{ports['balanced-grpc']}"
        self.balancer_stats_url = f"http://127.0.0.1:{ports['balancer-stats']}/stats;csv"
        return self.balanced_http_url

    def _start_gateway(self, port: int, upstream: str) -> None:
        assert self.work_dir is not None
        from google.protobuf import json_format

        limits = [
            limits_from_config(
                json_format.MessageToDict(m.config, preserving_proto_field_name=True),
                max_request_bytes=self.max_request_bytes,
            )
            for m in self.models
        ]
        path = write_limits(self.work_dir / "limits.json", limits)
        argv = [
            sys.executable,
            "-m",
            "inferstack.serving.local.gateway",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--limits",
            str(path),
        ]
        child = self._launch("gateway", argv, log=self.work_dir / "gateway.log", env=local_env())
        wait_listening(child, port)
        self.front_url = f"http://127.0.0.1:{port}"
        self._say(f"gateway on {self.front_url}: requests checked against the models' configs")

    def _wait_ready(self, triton: ChildProcess) -> None:
        url = self.replica_http_urls[int(triton.name.rsplit("-", 1)[1])]
        client = TritonClient(url, timeout_s=2.0)
        start = time.monotonic()
        last_report = -1
        try:
            while True:
                if not triton.alive():
                    raise RuntimeFailure(
                        self._load_failure(triton, f"{triton.name} {signal_name(triton.process.returncode)}")
                    )
                if stub := [line for line in triton.tail(50) if STUB_FAILURE in line]:
                    # Triton itself would wait for the stub until its own timeout, then stay unready.
                    raise RuntimeFailure(self._load_failure(triton, f"{triton.name}: {stub[-1].strip()}"))
                if client.is_ready() and all(client.is_ready(m.name) for m in self.models):
                    triton.note_model_copies()
                    self._note_ready(triton.name)
                    return
                elapsed = time.monotonic() - start
                if elapsed > self.startup_timeout_s:
                    raise RuntimeFailure(
                        self._load_failure(triton, f"{triton.name} not ready after {elapsed:.0f} s")
                    )
                if int(elapsed) != last_report:
                    last_report = int(elapsed)
                    self._say(f"waiting for {triton.name} /v2/health/ready ... {elapsed:.0f} s")
                time.sleep(0.25)
        finally:
            client.close()

    def _note_ready(self, name: str) -> None:
        since = time.monotonic() - self._supervised[name].started
        self.replica_starts = [
            replace(r, ready_s=since) if r.name == name and not r.ready_s else r for r in self.replica_starts
        ]
        self._say(f"{name} ready {since:.1f} s after its start")

    @staticmethod
    def _load_failure(triton: ChildProcess, headline: str) -> str:
        lines = triton.tail(200)
        relevant = [line for line in lines if any(m in line.lower() for m in LOAD_FAILURE_MARKERS)] or lines[
            -20:
        ]
        return f"{headline}; Triton's log ({triton.log}):\n" + "\n".join(relevant[-20:])

    def supervise(self) -> list[str]:
        """Restart dead replicas with bounded backoff; what happened, one line each.

        A replica that died is named with how it died and its last log lines, its process group and
        /dev/shm segments are cleaned up, and it is started again after 1, 2, 4, 8, 16 s (reset after a
        minute of running). Raises RuntimeFailure when a replica keeps dying past its last restart, or
        when another child dies: moto's objects, the balancer or the gateway are not Triton's to restore.
        """
        events: list[str] = []
        now = time.monotonic()
        for position, child in enumerate(self.children):
            state = self._supervised.get(child.name)
            if child.alive():
                if state is not None:  # a restarted replica's copies are known once its models load
                    child.note_model_copies()
                    if state.restarts and now - state.started > _STABLE_AFTER_S:
                        state.restarts = 0
                continue
            if state is None:
                raise RuntimeFailure(f"{child.describe_exit()}\nstopping: nothing serves without it")
            if state.due is None:
                if state.restarts >= len(_RESTART_BACKOFF_S):
                    raise RuntimeFailure(f"{child.describe_exit()}\ngave up after {state.restarts} restarts")
                child.stop()  # the orphaned python-backend stubs and their segments go now
                state.due = now + _RESTART_BACKOFF_S[state.restarts]
                events.append(f"{child.describe_exit()}\nrestarting in {state.due - now:.0f} s")
            elif now >= state.due:
                child.stop()
                with signals_deferred():
                    self.children[position] = child.restarted()
                state.restarts, state.due, state.started = state.restarts + 1, None, now
                events.append(
                    f"{child.name} restarted (restart {state.restarts} of {len(_RESTART_BACKOFF_S)})"
                )
        for event in events:
            self._say(event)
        return events

    def smoke(
        self, protocols: Sequence[Protocol] = ("http", "grpc"), *, tolerance: float = SMOKE_TOLERANCE
    ) -> list[SmokeResult]:
        """Every model: generated inputs -> Triton per protocol, compared with its TorchScript in-process.

        A reduced-precision model is held to its own build's tolerance instead (see precision.py).
        """
        results: list[SmokeResult] = []
        for model in self.models:
            limit = served_tolerance(model.torchscript.parent, tolerance)
            inputs = generate_inputs(model)
            try:
                expected = run_reference(model, inputs)
            except Exception as error:  # one broken model must not hide the others' results
                results.extend(
                    SmokeResult(model.name, p, False, float("inf"), 0.0, f"reference run failed: {error}")
                    for p in protocols
                )
                continue
            for protocol in protocols:
                # Through what users reach: the gateway, and the balancer's gRPC where there is one.
                url = self.front_url if protocol == "http" else self.balanced_grpc_url or self.grpc_url
                with TritonClient(url, protocol=protocol, timeout_s=30.0) as client:
                    start = time.perf_counter()
                    try:
                        actual = client.infer(model.name, inputs)
                    except Exception as error:
                        results.append(
                            SmokeResult(model.name, protocol, False, float("inf"), 0.0, str(error))
                        )
                        continue
                    latency = (time.perf_counter() - start) * 1000
                diff = compare(expected, actual)
                results.append(SmokeResult(model.name, protocol, diff <= limit, diff, latency))
        return results

    def stop(self, *, keep_work_dir: bool = False) -> None:
        stop_all(list(reversed(self.children)))
        self.children.clear()
        self.replica_http_urls.clear()
        self.replica_grpc_urls.clear()
        self.replica_metrics_urls.clear()
        if self._owns_work_dir and self.work_dir is not None and not keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
