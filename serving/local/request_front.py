"""The cluster's request front on this machine: the pods' very nginx.conf and njs script, only ports and
paths changed, run by the host's nginx (Debian's, with njs 0.7.9) in front of a local Triton."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from inferstack.components.request_front import (
    CONF_FILE,
    LIVE_PATH,
    METRICS_PATH,
    MODULE_PATH,
    TIMES_LOG,
    FrontPaths,
    config_files,
    nginx_command,
)
from inferstack.serving.local.processes import RuntimeFailure, free_port, group_members, start_child

START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class RunningFront:
    """A request front running here: where to send requests and scrape it, and its processes."""

    url: str  # the front's HTTP port: what the Service sends requests to
    metrics_url: str  # its metrics endpoint, as the ServiceMonitor scrapes it
    folder: Path  # its config folder; the temp folder is ``folder / "tmp"``
    master_pid: int

    def worker_pids(self) -> list[int]:
        """The processes nginx's master forked: the worker, where the requests' CPU goes, and the cache
        manager and loader, which spend next to nothing."""
        return [pid for pid in group_members(self.master_pid) if pid != self.master_pid]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@contextmanager
def running_front(triton_http_url: str) -> Iterator[RunningFront]:
    """nginx on the pod's files for the Triton at ``triton_http_url``, in a folder of its own that nginx's
    workers (nobody, when this runs as root) can read; stopped and removed on exit."""
    if shutil.which("nginx") is None or not Path(MODULE_PATH).is_file():
        raise RuntimeFailure(
            f"the request front needs nginx and {MODULE_PATH} (Debian's nginx and libnginx-mod-http-js; "
            "bash .ci/bootstrap installs them)"
        )
    triton_port = urlparse(triton_http_url).port
    if triton_port is None:
        raise RuntimeFailure(f"{triton_http_url}: no port")
    folder = Path(tempfile.mkdtemp(prefix="request-front-"))
    temp = folder / "tmp"
    temp.mkdir()
    for path in (folder, temp):
        path.chmod(0o755)
    if os.geteuid() == 0:
        # As root, nginx opens the times log as root and runs its workers as nobody, which fold (truncate)
        # it and write the counters beside it; in the pod one user does all of it.
        os.chown(temp, 65534, -1)
        log = temp / TIMES_LOG
        log.touch()
        log.chmod(0o666)
    paths = FrontPaths(
        listen_port=free_port(),
        triton_port=triton_port,
        metrics_port=free_port(),
        config_dir=str(folder),
        temp_dir=str(temp),
    )
    for name, text in config_files(paths).items():
        (folder / name).write_text(text)
    nginx = start_child("nginx", nginx_command(paths), log=folder / "nginx.log", env=dict(os.environ))
    front = RunningFront(
        url=f"http://127.0.0.1:{paths.listen_port}",
        metrics_url=f"http://127.0.0.1:{paths.metrics_port}{METRICS_PATH}",
        folder=folder,
        master_pid=nginx.process.pid,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if _status(front.url + LIVE_PATH) == 200:
                    break
            except OSError:
                pass
            if not nginx.alive() or time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"nginx did not start on {folder / CONF_FILE}:\n" + "\n".join(nginx.tail())
                )
            time.sleep(0.1)
        yield front
    finally:
        nginx.stop()
        shutil.rmtree(folder, ignore_errors=True)
