"""A real Prometheus on loopback, scraping local targets with the labels the cluster would add.

In the cluster, a ServiceMonitor makes Prometheus attach ``namespace``, ``pod`` and ``service`` to
Triton's series; here the scrape config attaches the same labels, so the very queries of the
dashboards, alert rules and KEDA triggers run unchanged against a local Triton.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferstack.serving.local.processes import ChildProcess, RuntimeFailure, free_port, start_child


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job of the local Prometheus, labelled as the cluster's ServiceMonitor labels it."""

    job: str
    url: str  # http://127.0.0.1:PORT/metrics
    labels: Mapping[str, str] = field(default_factory=dict)
    # As a ServiceMonitor endpoint's honorLabels and relabelings would configure the cluster's scrape.
    honor_labels: bool = False
    relabel_configs: Sequence[Mapping[str, Any]] = ()


def scrape_config(targets: Sequence[ScrapeTarget], *, interval_s: float) -> dict[str, Any]:
    jobs = []
    for target in targets:
        parsed = urllib.parse.urlparse(target.url)
        job: dict[str, Any] = {
            "job_name": target.job,
            "scrape_interval": f"{interval_s:g}s",
            "metrics_path": parsed.path or "/metrics",
            "honor_labels": target.honor_labels,
            "static_configs": [{"targets": [parsed.netloc], "labels": dict(target.labels)}],
        }
        if target.relabel_configs:
            job["relabel_configs"] = [dict(c) for c in target.relabel_configs]
        jobs.append(job)
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": jobs,
    }


def wait_ready(child: ChildProcess, url: str, timeout_s: float = 30.0) -> None:
    """Poll ``url`` (a Prometheus-style /-/ready) until it answers 200; fail early if ``child`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeFailure(f"{child.name} exited:\n" + "\n".join(child.tail()))
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeFailure(f"{child.name} not ready after {timeout_s:.0f} s:\n" + "\n".join(child.tail()))


@dataclass
class LocalPrometheus:
    """``with LocalPrometheus(targets) as prometheus: prometheus.query("up")``."""

    targets: Sequence[ScrapeTarget]
    interval_s: float = 1.0
    binary: str = "prometheus"
    url: str = field(default="", init=False)
    _child: ChildProcess | None = field(default=None, init=False)
    _work_dir: Path | None = field(default=None, init=False)

    def start(self) -> LocalPrometheus:
        binary = shutil.which(self.binary)
        if binary is None:
            raise RuntimeFailure(
                "prometheus not found: install it (Debian: apt-get install prometheus, or bash .ci/bootstrap)"
            )
        self._work_dir = Path(tempfile.mkdtemp(prefix="inferstack-prometheus-"))
        config = self._work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets, interval_s=self.interval_s)))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._child = start_child(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            log=self._work_dir / "prometheus.log",
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            wait_ready(self._child, f"{self.url}/-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector (or scalar as one sample). Raises on a query error."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=body, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise RuntimeFailure(f"query failed: {answer.get('error')} ({expr})")
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns data (scrapes land every ``interval_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(self.interval_s)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
