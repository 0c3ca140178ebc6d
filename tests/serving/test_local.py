"""The local runtime's failure modes: each gives a clear message quickly and leaves nothing running."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.answers import compare
from inferstack.serving.local import processes
from inferstack.serving.local import runtime as runtime_module
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.processes import RuntimeFailure, check_port
from inferstack.serving.local.records import Ports
from inferstack.serving.local.runtime import LocalRuntime


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its state tells.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] == "Z"


def running_children(parent: int | None = None) -> set[int]:
    """Live (non-zombie) children of ``parent`` (default: this test process, other tests' servers included)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == (parent or os.getpid()) and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.mark.parametrize(
    ("ports", "field"),
    [
        ({"http": 0}, "http_port"),
        ({"metrics": 65536}, "metrics_port"),
        ({"s3": True}, "s3_port"),
        ({"grpc": "8001"}, "grpc_port"),
        ({"http": 8000, "grpc": 8000}, "ports"),
    ],
)
def test_bad_ports_are_refused_when_declared(ports: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Ports(**ports)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_compare_is_exact_for_integers_and_strict_about_shape_and_dtype() -> None:
    floats = np.array([[0.5, -1.0]], dtype=np.float32)
    ids = np.array([[3, 4]], dtype=np.int64)
    assert compare(
        {"y": floats, "i": ids}, {"y": floats + np.float32(5e-6), "i": ids.copy()}
    ) == pytest.approx(5e-6, rel=1e-2)
    assert compare({"i": ids}, {"i": ids + 1}) == float("inf")
    assert compare({"m": ids > 3}, {"m": ids > 2}) == float("inf")
    assert compare({"y": floats}, {"y": floats.astype(np.float64)}) == float("inf")
    assert compare({"y": floats}, {"y": floats.reshape(2, 1)}) == float("inf")
    assert compare({"y": floats}, {"z": floats}) == float("inf")


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_stop_leaves_no_child_process_and_no_work_dir(tmp_path: Path) -> None:
    runtime = LocalRuntime(build_demo_repository(tmp_path / "repo"))
    with runtime:
        pids = [child.process.pid for child in runtime.children]
        work_dir = runtime.work_dir
        assert len(pids) == 3 and set(pids) <= running_children()  # moto, Triton, the gateway
    assert all(gone(pid) for pid in pids) and not set(pids) & running_children()
    assert work_dir is not None and not work_dir.exists()


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    before = running_children()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        runtime = LocalRuntime(build_demo_repository(tmp_path / "repo"), ports=Ports(grpc=port))
        with pytest.raises(InvalidInput) as caught:
            runtime.start()
    assert caught.value.field == "grpc_port" and str(port) in str(caught.value)
    assert running_children() <= before


def test_a_missing_triton_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = running_children()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a)
    )
    runtime = LocalRuntime(build_demo_repository(tmp_path / "repo"))
    with pytest.raises(RuntimeFailure, match="nvidia-pytriton"):
        runtime.start()
    assert running_children() <= before


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_a_model_that_fails_to_load_reports_tritons_log_quickly(tmp_path: Path) -> None:
    before = running_children()
    repository = build_demo_repository(tmp_path / "repo")
    # Shaped like a TorchScript archive (the publish check passes), unreadable to libtorch.
    with zipfile.ZipFile(repository / "demo" / "1" / "model.pt", "w") as archive:
        archive.writestr("demo/data.pkl", b"this is not a pickle")
        archive.writestr("demo/code/__torch__.py", "not code")
    runtime = LocalRuntime(repository, startup_timeout_s=120, work_dir=tmp_path / "work")
    start = time.monotonic()
    with pytest.raises(RuntimeFailure) as caught:
        runtime.start()
    assert time.monotonic() - start < 60
    message = str(caught.value)
    assert "demo" in message and str(tmp_path / "work" / "triton-0.log") in message
    assert 'hasRecord(\\"version\\")' in (tmp_path / "work" / "triton-0.log").read_text()
    assert "failed to load" in message.lower() or "error" in message.lower()
    assert running_children() <= before


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_ctrl_c_stops_every_child_of_local_up() -> None:
    """`inferstack local up` serving until Ctrl-C: SIGINT must end it and everything it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstack.cli.main", "local", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 180
        for line in process.stdout:
            if "press Ctrl-C" in line or time.monotonic() > deadline:
                break
        else:
            pytest.fail("local up ended before serving")
        children = running_children(process.pid)
        expected = 4 if shutil.which("prometheus") else 3  # moto, Triton, the gateway (and Prometheus)
        assert len(children) == expected, children
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        assert all(gone(pid) for pid in children)
        assert process.stdout.read().strip().splitlines()[-1:] == ["inferstack: stopped"]
    finally:
        if process.poll() is None:
            process.kill()


def descendants(parent: int) -> set[int]:
    """Every live process under ``parent``, at any depth (Triton's python-backend stubs included)."""
    found: set[int] = set()
    frontier = {parent}
    while frontier:
        frontier = set().union(*(running_children(pid) for pid in frontier)) - found
        found |= frontier
    return found


# Moments of `local up`'s start-up, by the progress line that marks each.
START_UP_MOMENTS = [
    "building the demo model",
    "starting emulated S3",
    "published",
    "starting triton-0",
    "waiting for triton-0",
    "gateway on",
]


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
@pytest.mark.parametrize("moment", START_UP_MOMENTS)
def test_ctrl_c_at_any_moment_of_start_up_stops_everything_within_10_s(moment: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstack.cli.main", "local", "up", "--no-prometheus"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if moment in line:
                break
        else:
            pytest.fail(f"local up ended before {moment!r}")
        started = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert process.wait(timeout=10) == 130
        left = {pid for pid in started | descendants(process.pid) if not gone(pid)}
        assert not left, (moment, left)
        assert time.monotonic() - sent < 10, moment
        assert process.stdout.read().strip().endswith("inferstack: stopped"), moment
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_s3_down_at_start_is_reported_with_tritons_line_and_a_later_start_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = running_children()
    repository = build_demo_repository(tmp_path / "repo")
    publish = LocalRuntime._publish

    def publish_then_lose_s3(runtime: LocalRuntime) -> None:
        publish(runtime)
        moto = next(c for c in runtime.children if c.name == "moto").process
        moto.kill()  # S3 goes away between the upload and Triton's first read
        moto.wait(timeout=10)

    monkeypatch.setattr(LocalRuntime, "_publish", publish_then_lose_s3)
    start = time.monotonic()
    with pytest.raises(RuntimeFailure) as caught:
        LocalRuntime(repository, work_dir=tmp_path / "down", startup_timeout_s=60).start()
    message = str(caught.value)
    print(message)
    assert time.monotonic() - start < 90
    # The replica's fill is the first to read S3 (as the pod's init container): its one line says so.
    assert message.startswith("triton-0: s3://") and "ConnectionRefusedError" in message, message
    assert running_children() <= before
    monkeypatch.undo()  # S3 is back
    with LocalRuntime(repository, work_dir=tmp_path / "up") as runtime:
        assert all(r.ok for r in runtime.smoke(("http",)))
    assert running_children() <= before


def test_a_port_in_time_wait_is_usable() -> None:
    """Triton binds with SO_REUSEADDR: a port whose last connection lingers in TIME_WAIT is free to it."""
    with socket.socket() as server:  # the last run's server on that port, bound as Triton binds
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the side that closes first keeps the TIME_WAIT, on the server's port
            client.recv(1)
    # The listener is closed; the accepted connection's end lingers in TIME_WAIT on ``port``.
    assert check_port(port, field="http_port") == port
    with socket.socket() as taken:  # a port really in use is still refused
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(InvalidInput):
            check_port(taken.getsockname()[1], field="http_port")


@pytest.mark.parametrize("replicas", [0, -1, 9, True, 2.0])
def test_replicas_are_bounded(tmp_path: Path, replicas: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        LocalRuntime(tmp_path, replicas=replicas)  # type: ignore[arg-type]
    assert caught.value.field == "replicas" and "1 to 8" in caught.value.allowed


@pytest.mark.parametrize("prefix", ["", "/models", "a//b", "a/../b", "models/"])
def test_prefixes_are_checked_as_the_stacks_are(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        LocalRuntime(tmp_path, prefix=prefix)
    assert caught.value.field == "prefix"


@pytest.mark.real_server
@pytest.mark.usefixtures("triton_present")
def test_a_stub_that_cannot_start_fails_the_start_up_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The python backend's stub of a Python whose libpython the loader cannot find (pyenv's 3.12 before
    the fix) prints the loader's line and exits; Triton then waits for it and stays unready. The real
    Triton runs a stub that fails as that one did: start-up ends with that line, well before the 180 s
    readiness wait."""
    fake = tmp_path / "stub" / "triton_python_backend_stub"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'triton_python_backend_stub: error while loading shared libraries: "
        "libpython3.99.so.1.0: cannot open shared object file: No such file or directory' >&2\nexit 127\n"
    )
    fake.chmod(0o755)
    real = processes.find_triton()
    monkeypatch.setattr(runtime_module, "find_triton", lambda: replace(real, python_stub=fake))
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"libpython3\.99\.so\.1\.0"):
        repository = build_demo_repository(tmp_path / "repo")
        LocalRuntime(repository, work_dir=tmp_path / "work", startup_timeout_s=90).start()
    assert time.monotonic() - started < 60


def test_an_interpreter_without_a_shared_libpython_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A static Python with no libpython3.x installed: one line saying what to install, no child started."""
    settings = {"LIBDIR": "/nowhere", "INSTSONAME": "libpython3.99.so.1.0"}
    monkeypatch.setattr(processes.sysconfig, "get_config_var", settings.get)
    monkeypatch.setattr(processes.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(RuntimeFailure, match=r"needs libpython3\.99\.so\.1\.0.*install Debian's"):
        processes.python_library_dir()
