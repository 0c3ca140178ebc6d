"""`inferstack bench --front` on the real nginx and njs before the real Triton: the costs it prints are
the worker's own CPU time, and they grow with the JSON body as the front's sizing assumes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from inferstack.cli.main import app
from inferstack.components.model_service.args import FRONT_CPU_MS_PER_REQUEST, FRONT_CPU_NS_PER_BYTE

pytestmark = pytest.mark.real_server


@pytest.mark.usefixtures("triton_present")
def test_the_front_bench_prints_the_cost_per_request_side_by_side() -> None:
    result = CliRunner().invoke(app, ["bench", "--front", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    rows = {
        line[:14].strip(): float(line.split()[-3])
        for line in result.output.splitlines()
        if line.endswith(tuple("0123456789")) and ("JSON " in line or "binary " in line)
    }
    assert set(rows) == {
        f"{size} {kind}" for size in ("1 KB", "1 MB", "10 MB") for kind in ("JSON", "binary")
    }
    assert rows["1 KB JSON"] < rows["1 MB JSON"] < rows["10 MB JSON"]
    # JSON is parsed number by number; a binary body's tensor is not parsed at all.
    for size in ("1 MB", "10 MB"):
        assert rows[f"{size} binary"] * 3 < rows[f"{size} JSON"]
    # The sizing constants are this benchmark's figures, within a busy machine's noise.
    fitted = next(line for line in result.output.splitlines() if line.startswith("JSON fit:")).split()
    base_ms, ns_per_byte = float(fitted[2]), float(fitted[7])
    assert FRONT_CPU_MS_PER_REQUEST / 3 < base_ms < FRONT_CPU_MS_PER_REQUEST * 3
    assert FRONT_CPU_NS_PER_BYTE / 3 < ns_per_byte < FRONT_CPU_NS_PER_BYTE * 3
