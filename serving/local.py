"""The embedded runtime: emulated S3 (moto server) + the real Triton that ships in nvidia-pytriton.

Same path as the cluster, on loopback: a model repository is published to S3 and Triton loads it
straight from ``s3://http://127.0.0.1:PORT/bucket/prefix``. Every child process runs in its own
process group, dies with its parent (PR_SET_PDEATHSIG) and is stopped on exit, on error and on
Ctrl-C; starting never hangs: a dead process or a model that fails to load ends the wait at once,
with Triton's own log lines.

PR_SET_PDEATHSIG fires when the *thread* that started a child ends, so start a ``LocalRuntime`` from
a thread that outlives it (the main thread, typically).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client import Protocol, TritonClient
from inferstack.serving.repository import RepositoryModel, generate_inputs, read_repository, run_reference

Array = npt.NDArray[Any]

PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"
INSTALL_HINT = "install it with `bash .ci/bootstrap` or `pip install --no-deps nvidia-pytriton==0.7.0`"
_DUMMY_AWS = {
    # moto accepts any credentials; real ones must never reach the emulator.
    "AWS_ACCESS_KEY_ID": "inferstack-local",
    "AWS_SECRET_ACCESS_KEY": "inferstack-local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
SMOKE_TOLERANCE = 1e-5  # max |Triton - PyTorch| over float outputs; integers and booleans must match
_LOAD_FAILURE_MARKERS = ("failed to load", "error:", "exception", "traceback")


class RuntimeFailure(RuntimeError):
    """The local runtime could not start or serve; the message says why and what to do."""


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    backends: Path
    python_stub: Path
    libraries: Path


def find_triton() -> TritonInstall:
    """The Triton server inside the nvidia-pytriton wheel, found without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeFailure(
            f"Triton Inference Server not found: nvidia-pytriton is not installed; {INSTALL_HINT}"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    install = TritonInstall(
        server=root / "bin" / "tritonserver",
        backends=root / "backends",
        python_stub=root / "python_backend_stubs" / PYTHON_TAG / "triton_python_backend_stub",
        libraries=package.parent / "nvidia_pytriton.libs",
    )
    for path in (install.server, install.backends, install.python_stub, install.libraries):
        if not path.exists():
            raise RuntimeFailure(f"Triton Inference Server incomplete: {path} is missing; {INSTALL_HINT}")
    return install


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port(port: int, *, field: str) -> int:
    """A user-chosen port must be free on 127.0.0.1 now, or we say so before starting anything."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise InvalidInput(field, port, "a free port on 127.0.0.1 (this one is taken)") from None
    return port


_PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None]:
    """A pre-exec hook that asks the kernel to SIGTERM the child when inferstack dies.

    prctl is looked up here, in the parent: loading a library in a forked child of a threaded
    process can deadlock on the loader's lock.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ChildProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.splitlines()[-lines:]

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``."""
        if not self.alive():
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_child(name: str, argv: Sequence[str], *, log: Path, env: dict[str, str]) -> ChildProcess:
    handle = log.open("wb")
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_death_signal(),
        )
    finally:
        handle.close()
    return ChildProcess(name, process, log)


@dataclass(frozen=True)
class Ports:
    """Ports on 127.0.0.1; None picks a free one. Whether a given port is free is checked at start."""

    http: int | None = None
    grpc: int | None = None
    metrics: int | None = None
    s3: int | None = None

    def __post_init__(self) -> None:
        given = {name: port for name, port in self.items() if port is not None}
        for name, port in given.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput(f"{name}_port", port, "a port number from 1 to 65535")
        if len(set(given.values())) != len(given):
            raise InvalidInput("ports", given, "a different port for each of http, grpc, metrics and s3")

    def items(self) -> list[tuple[str, int | None]]:
        return [("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics), ("s3", self.s3)]


@dataclass(frozen=True)
class SmokeResult:
    model: str
    protocol: Protocol
    ok: bool
    max_abs_diff: float
    latency_ms: float
    error: str = ""


def compare(expected: dict[str, Array], actual: dict[str, Array]) -> float:
    """Largest absolute difference over all outputs; inf where names, shapes or dtypes disagree.

    Integers and booleans must match exactly (any difference is inf): ids and masks are not approximate.
    """
    if set(expected) != set(actual):
        return float("inf")
    worst = 0.0
    for name, want in expected.items():
        got = actual[name]
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            return float("inf")
        if want.dtype.kind in "biu":
            worst = max(worst, 0.0 if np.array_equal(want, got) else float("inf"))
        else:
            worst = max(
                worst, float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)), initial=0.0))
            )
    return worst


@dataclass
class LocalRuntime:
    """moto S3 + real Triton on loopback, serving ``repository`` (a local model repository folder).

    Use as a context manager: ``with LocalRuntime(repo) as runtime: ...``.
    """

    repository: Path
    work_dir: Path | None = None
    ports: Ports = field(default_factory=Ports)
    bucket: str = "inferstack-models"
    prefix: str = "models"
    startup_timeout_s: float = 180.0
    progress: Callable[[str], None] | None = None
    triton_args: Sequence[str] = ()  # more server flags: tracing, logging

    models: list[RepositoryModel] = field(default_factory=list, init=False)
    children: list[ChildProcess] = field(default_factory=list, init=False)
    s3_endpoint: str = field(default="", init=False)
    model_repository_uri: str = field(default="", init=False)
    http_url: str = field(default="", init=False)
    grpc_url: str = field(default="", init=False)
    metrics_url: str = field(default="", init=False)
    _owns_work_dir: bool = field(default=False, init=False)

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def start(self) -> LocalRuntime:
        # Everything that can be checked is checked before the first process starts.
        self.models = read_repository(self.repository)
        triton = find_triton()
        ports = {
            name: free_port() if value is None else check_port(value, field=f"{name}_port")
            for name, value in self.ports.items()
        }
        if len(set(ports.values())) != len(ports):  # a free port the kernel handed out twice
            raise RuntimeFailure(f"could not pick four different free ports on 127.0.0.1: {ports}")
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="inferstack-local-"))
            self._owns_work_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_s3(ports["s3"])
            self._publish()
            self._start_triton(triton, ports)
        except BaseException:
            self.stop(keep_work_dir=True)  # the logs it names must still be there to read
            raise
        return self

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(_DUMMY_AWS)
        return env

    def _start_s3(self, port: int) -> None:
        assert self.work_dir is not None
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            raise RuntimeFailure(f"moto_server not found next to {sys.executable}; install inferstack[local]")
        self._say(f"starting emulated S3 (moto) on 127.0.0.1:{port}")
        child = start_child(
            "moto",
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            log=self.work_dir / "moto.log",
            env=self._env(),
        )
        self.children.append(child)
        self.s3_endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeFailure("moto server exited:\n" + "\n".join(child.tail()))
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeFailure(f"moto server did not listen on 127.0.0.1:{port} within 30 s")

    def _s3(self) -> Any:
        import boto3

        env = _DUMMY_AWS
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def _publish(self) -> None:
        from inferstack.serving.publish import S3Location, publish_repository
        from inferstack.serving.repository import to_python_target

        assert self.work_dir is not None
        s3 = self._s3()
        s3.create_bucket(Bucket=self.bucket)
        # The CPU Triton here has no libtorch backend: serve libtorch models through the python backend.
        served = to_python_target(self.repository, self.work_dir / "repository")
        report = publish_repository(served, S3Location(self.bucket, self.prefix), s3=s3)
        self.model_repository_uri = f"s3://{self.s3_endpoint}/{self.bucket}/{self.prefix}"
        self._say(f"published {len(report.uploaded)} files to s3://{self.bucket}/{self.prefix}")

    def _start_triton(self, triton: TritonInstall, ports: dict[str, int]) -> None:
        assert self.work_dir is not None
        backends = self.work_dir / "backends"
        if not backends.exists():
            # Built aside and renamed: an interrupted copy must not be reused from a kept --work-dir.
            partial = Path(tempfile.mkdtemp(prefix=".backends-", dir=self.work_dir))
            shutil.copytree(triton.backends, partial, dirs_exist_ok=True)
            shutil.copy2(triton.python_stub, partial / "python" / triton.python_stub.name)
            partial.rename(backends)
        env = self._env()
        # The python backend's stub imports torch and numpy from the first python on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(triton.libraries), env.get("LD_LIBRARY_PATH")])
        )
        argv = [
            str(triton.server),
            f"--model-repository={self.model_repository_uri}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={m.name}" for m in self.models),
            "--http-address=127.0.0.1",
            f"--http-port={ports['http']}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={ports['grpc']}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={ports['metrics']}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
            *self.triton_args,
        ]
        self.http_url = f"http://127.0.0.1:{ports['http']}"
        self.grpc_url = f"127.0.0.1:{ports['grpc']}"
        self.metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        self._say(f"starting Triton from {self.model_repository_uri}")
        child = start_child("triton", argv, log=self.work_dir / "triton.log", env=env)
        self.children.append(child)
        self._wait_ready(child)

    def _wait_ready(self, triton: ChildProcess) -> None:
        client = TritonClient(self.http_url, timeout_s=2.0)
        start = time.monotonic()
        last_report = -1
        try:
            while True:
                if not triton.alive():
                    raise RuntimeFailure(
                        self._load_failure(triton, f"Triton exited with code {triton.process.returncode}")
                    )
                if client.is_ready() and all(client.is_ready(m.name) for m in self.models):
                    self._say(f"Triton ready after {time.monotonic() - start:.1f} s")
                    return
                elapsed = time.monotonic() - start
                if elapsed > self.startup_timeout_s:
                    raise RuntimeFailure(
                        self._load_failure(triton, f"Triton not ready after {elapsed:.0f} s")
                    )
                if int(elapsed) != last_report:
                    last_report = int(elapsed)
                    self._say(f"waiting for /v2/health/ready ... {elapsed:.0f} s")
                time.sleep(0.25)
        finally:
            client.close()

    @staticmethod
    def _load_failure(triton: ChildProcess, headline: str) -> str:
        lines = triton.tail(200)
        relevant = [line for line in lines if any(m in line.lower() for m in _LOAD_FAILURE_MARKERS)] or lines[
            -20:
        ]
        return f"{headline}; Triton's log ({triton.log}):\n" + "\n".join(relevant[-20:])

    def smoke(
        self, protocols: Sequence[Protocol] = ("http", "grpc"), *, tolerance: float = SMOKE_TOLERANCE
    ) -> list[SmokeResult]:
        """Every model: generated inputs -> Triton per protocol, compared with its TorchScript in-process."""
        results: list[SmokeResult] = []
        for model in self.models:
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
                url = self.http_url if protocol == "http" else self.grpc_url
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
                results.append(SmokeResult(model.name, protocol, diff <= tolerance, diff, latency))
        return results

    def stop(self, *, keep_work_dir: bool = False) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self._owns_work_dir and self.work_dir is not None and not keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_demo_repository(path: Path, *, target: Literal["python", "pytorch_libtorch"] = "python") -> Path:
    """The demo model as a repository folder (built in code, nothing downloaded)."""
    from inferstack.serving.repository import DynamicBatching, ModelOptions, build_model, demo_model

    module, example = demo_model()
    options = ModelOptions(
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(4, 8), max_queue_delay_us=500)
    )
    build_model(
        module,
        example,
        name="demo",
        repository=path,
        target=target,
        options=options,
        input_names=["features"],
        output_names=["probabilities"],
    )
    return path
