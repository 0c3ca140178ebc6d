"""Logs with a budget: what Triton 2.51 writes per request at each log level, measured on the real
server, is what infra.log_volume (and so `inferstack cost`) says; Fluent Bit's throttle filter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inferstack.components.triton_telemetry import fluent_bit_throttle, triton_log_args
from inferstack.infra.errors import InvalidInput
from inferstack.infra.log_volume import TRITON_LOG_BYTES_PER_REQUEST, TRITON_LOG_LINES_PER_REQUEST
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import LocalRuntime

REQUESTS = 100


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[Path]:
    yield build_demo_repository(tmp_path_factory.mktemp("repository"))


def measure(repository: Path, work: Path, log_verbose: int) -> tuple[float, float, list[str]]:
    """Bytes and lines Triton's log grows by per request, over REQUESTS after a warm-up."""
    with LocalRuntime(repository, work_dir=work, triton_args=triton_log_args(log_verbose)) as runtime:
        client = TritonClient(runtime.http_url, timeout_s=10)
        features = np.zeros((1, 16), np.float32)
        client.infer("demo", {"features": features}, request_id="warm-up")
        log = work / "triton-0.log"
        time.sleep(1)
        size, lines = log.stat().st_size, len(log.read_text().splitlines())
        for i in range(REQUESTS):
            client.infer("demo", {"features": features}, request_id=f"req-{i}")
        time.sleep(2)  # the last request's release lines
        text = log.read_text()
    grown = text.splitlines()[lines:]
    return (len(text.encode()) - size) / REQUESTS, len(grown) / REQUESTS, grown


@pytest.mark.real_server
def test_bytes_per_request_at_each_level_are_the_measured_ones(repository: Path, tmp_path: Path) -> None:
    quiet_bytes, quiet_lines, _ = measure(repository, tmp_path / "v0", 0)
    verbose_bytes, verbose_lines, lines = measure(repository, tmp_path / "v1", 1)
    print(f"Triton 2.51 log per request: verbose 0 {quiet_bytes:.0f} B, verbose 1 {verbose_bytes:.0f} B")
    assert (quiet_bytes, quiet_lines) == (TRITON_LOG_BYTES_PER_REQUEST[0], TRITON_LOG_LINES_PER_REQUEST[0])
    assert verbose_lines == TRITON_LOG_LINES_PER_REQUEST[1]
    # Timestamps and thread ids vary in width a little from run to run.
    assert verbose_bytes == pytest.approx(TRITON_LOG_BYTES_PER_REQUEST[1], rel=0.05)
    assert any("[request id: req-7]" in line for line in lines)  # the verbose lines do carry the ids


def test_fluent_bit_throttle_is_a_filter_entry_to_merge() -> None:
    entry = fluent_bit_throttle(200, match="kube.var.log.containers.*_ranker_*")
    assert entry == {
        "name": "throttle",
        "match": "kube.var.log.containers.*_ranker_*",
        "rate": 200,
        "window": 60,
        "interval": "1s",
        "print_status": True,
    }
    with pytest.raises(InvalidInput) as caught:
        fluent_bit_throttle(0, match="kube.*")
    assert caught.value.field == "records_per_s"
