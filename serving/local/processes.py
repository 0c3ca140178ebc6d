"""The local runtime's child processes: where Triton and HAProxy are, free ports, and children that run in
their own process group, die with their parent (PR_SET_PDEATHSIG) and are stopped on exit, error and
Ctrl-C.

PR_SET_PDEATHSIG fires when the *thread* that started a child ends, so start them from a thread that
outlives them (the main thread, typically).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inferstack.infra.errors import InvalidInput
from inferstack.serving.local.balancer import find_haproxy

PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"
INSTALL_HINT = "install it with `bash .ci/bootstrap` or `pip install --no-deps nvidia-pytriton==0.7.0`"
DUMMY_AWS = {
    # moto accepts any credentials; real ones must never reach the emulator.
    "AWS_ACCESS_KEY_ID": "inferstack-local",
    "AWS_SECRET_ACCESS_KEY": "inferstack-local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
SMOKE_TOLERANCE = 1e-5  # max |Triton - PyTorch| over float outputs; integers and booleans must match
LOAD_FAILURE_MARKERS = ("failed to load", "error:", "exception", "traceback")
# What a python-backend stub that cannot start prints (a missing libpython, say) in Triton's log.
STUB_FAILURE = "error while loading shared libraries"
_CRASH_MARKERS = (*LOAD_FAILURE_MARKERS, "terminate called", "what():", "signal (")


class RuntimeFailure(RuntimeError):
    """The local runtime could not start or serve; the message says why and what to do."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the Triton server from nvidia-pytriton, its backends, python stub and libraries are."""

    server: Path
    backends: Path
    python_stub: Path
    libraries: Path
    python_libraries: Path  # where the stub finds libpython3.x.so.1.0: this interpreter's LIBDIR


def python_library_dir() -> Path:
    """The folder holding this interpreter's shared libpython, which the python backend's stub links.

    Debian's python3.11 puts it on the loader's default path; pyenv's and other builds keep it in their
    own LIBDIR, which the stub does not find by itself ("error while loading shared libraries").
    """
    name = sysconfig.get_config_var("INSTSONAME") or f"libpython{PYTHON_TAG}.so.1.0"
    folder = Path(sysconfig.get_config_var("LIBDIR") or sys.base_prefix)
    # Debian's static python3.x names the loader's default folder as its LIBDIR, where its libpython3.x
    # package puts the library: the same test holds for both, as in the bootstrap's.
    if (folder / name).exists() or ctypes.util.find_library(f"python{PYTHON_TAG}") is not None:
        return folder
    raise RuntimeFailure(
        f"Triton's python backend needs {name}, and this Python ({sys.executable}) has no shared "
        f"libpython: install Debian's or Ubuntu's libpython{PYTHON_TAG} (`bash .ci/bootstrap` does, as "
        "root), or use a Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"
    )


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
        python_libraries=python_library_dir(),
    )
    for path in (install.server, install.backends, install.python_stub, install.libraries):
        if not path.exists():
            raise RuntimeFailure(f"Triton Inference Server incomplete: {path} is missing; {INSTALL_HINT}")
    return install


def find_haproxy_or_fail() -> str:
    try:
        return find_haproxy()
    except FileNotFoundError as error:
        raise RuntimeFailure(str(error)) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port(port: int, *, field: str) -> int:
    """A user-chosen port must be free on 127.0.0.1 now, or we say so before starting anything.

    Bound with SO_REUSEADDR, as Triton, moto and Prometheus bind theirs: a port whose last
    connection lingers in TIME_WAIT is free to them, so it is free here too.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, the leader's orphans included."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


# Triton copies each model it loads from S3 into /tmp/folderXXXXXX (TMPDIR is not consulted) and
# leaves the copy behind when it is killed; its python-backend stubs are started with a path in it.
_TRITON_TEMP = re.compile(r"^(/tmp/folder[A-Za-z0-9]{6})/")


def temp_dirs(pgid: int) -> set[Path]:
    """Triton's model copies that the live members of process group ``pgid`` are using."""
    found = set()
    for pid in group_members(pgid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            match = _TRITON_TEMP.match(arg.decode(errors="replace"))
            if match:
                found.add(Path(match.group(1)))
    return found


def signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


@dataclass
class ChildProcess:
    """A child in its own process group; ``shm_prefix`` names the /dev/shm segments it may leave."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    shm_prefix: str = ""
    model_copies: set[Path] = field(default_factory=set)  # seen while running: see ``temp_dirs``

    def note_model_copies(self) -> None:
        """Remember Triton's model copies now: its stubs, which name them, may be gone by ``stop()``."""
        self.model_copies |= temp_dirs(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.splitlines()[-lines:]

    def describe_exit(self, lines: int = 8) -> str:
        """Which child died, how, and its last log lines: the ones that say why first, then the tail.

        A crashing Triton ends its log with a stack of addresses; the reason comes before them.
        """
        recent = self.tail(200)
        why = [line for line in recent if any(m in line.lower() for m in _CRASH_MARKERS)][-lines:]
        shown = why + [line for line in recent[-lines:] if line not in why]
        tail = "\n".join(f"  {line}" for line in shown)
        return (
            f"{self.name} (pid {self.process.pid}) {signal_name(self.process.poll())}; "
            f"last lines of {self.log}:\n{tail}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout_s``.

        The group is signalled even when its leader is already dead: Triton's python-backend stubs
        outlive a killed Triton, ignore SIGTERM and hold a /dev/shm segment each. Segments under
        ``shm_prefix`` are removed last, since a process killed with SIGKILL cannot unlink its own, and
        so are the model copies the group's processes were using.
        """
        pgid = self.process.pid
        self.note_model_copies()
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            if not group_members(pgid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while group_members(pgid) and time.monotonic() < deadline:
                self.process.poll()  # reap the leader, or it stays a member as a zombie
                time.sleep(0.05)
        self.process.poll()
        for folder in self.model_copies:
            shutil.rmtree(folder, ignore_errors=True)
        if self.shm_prefix:
            for segment in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
                segment.unlink(missing_ok=True)

    def restarted(self) -> ChildProcess:
        """The same command started again, with the same log (appended) and the same segment prefix."""
        self.stop()
        child = start_child(self.name, self.argv, log=self.log, env=self.env, append=True)
        child.shm_prefix = self.shm_prefix
        return child


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back (then delivered) while a child starts and is counted: an interrupt
    between the fork and the bookkeeping would leave a child that nobody stops. Main thread only,
    where Python runs signal handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda number, _frame: received.append(number)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def stop_all(children: Sequence[ChildProcess], timeout_s: float = 2.0) -> None:
    """Stop every child's process group at once, within ``timeout_s`` + 3 s in all (one after the
    other, a Triton whose stubs ignore SIGTERM would take that long each): SIGTERM to every group,
    SIGKILL to what is left after ``timeout_s``, then each child's own cleanup (``ChildProcess.stop``)."""
    for child in children:
        child.note_model_copies()
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 3.0)):
        live = [c for c in children if group_members(c.process.pid)]
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            for child in live:
                child.process.poll()  # reap the leader, or it stays a member as a zombie
            live = [c for c in live if group_members(c.process.pid)]
            time.sleep(0.05)
    for child in children:
        child.stop()


def start_child(
    name: str, argv: Sequence[str], *, log: Path, env: dict[str, str], append: bool = False
) -> ChildProcess:
    if not append:
        log.write_bytes(b"")
    # Appending, always: a child that opens the file again (nginx's /dev/stdout access log) writes at
    # its end too, instead of over what the inherited descriptor's own offset writes.
    handle = log.open("ab")
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
    return ChildProcess(name, process, log, tuple(argv), env)


def local_env() -> dict[str, str]:
    """This process's environment with the emulator's credentials instead of any real AWS ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DUMMY_AWS)
    return env


def triton_env(triton: TritonInstall) -> dict[str, str]:
    """``local_env`` plus what the wheel's Triton needs to run here."""
    env = local_env()
    # The python backend's stub imports torch and numpy from the first python on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [str(triton.libraries), str(triton.python_libraries), env.get("LD_LIBRARY_PATH")])
    )
    return env


def triton_backends(triton: TritonInstall, work_dir: Path) -> Path:
    """Triton's backends with the python stub for this interpreter, under ``work_dir`` (made once)."""
    backends = work_dir / "backends"
    if not backends.exists():
        # Built aside and renamed: an interrupted copy must not be reused from a kept --work-dir.
        partial = Path(tempfile.mkdtemp(prefix=".backends-", dir=work_dir))
        shutil.copytree(triton.backends, partial, dirs_exist_ok=True)
        shutil.copy2(triton.python_stub, partial / "python" / triton.python_stub.name)
        partial.rename(backends)
    return backends


def wait_listening(child: ChildProcess, port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeFailure(f"{child.name} exited:\n" + "\n".join(child.tail()))
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeFailure(f"{child.name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def start_moto(work_dir: Path, port: int) -> ChildProcess:
    """moto's S3 (and the rest of its AWS) on 127.0.0.1:``port``, listening when this returns."""
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        raise RuntimeFailure(f"moto_server not found next to {sys.executable}; install inferstack[local]")
    child = start_child(
        "moto", [str(moto), "-H", "127.0.0.1", "-p", str(port)], log=work_dir / "moto.log", env=local_env()
    )
    try:
        wait_listening(child, port)
    except BaseException:
        child.stop()
        raise
    return child
