"""`inferstack bench`: the statistics it prints, and a short real sweep against the local runtime.

No timing is asserted: a benchmark reports numbers, tests check that it measures what it says.
"""

from __future__ import annotations

import math

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.bench import (
    Point,
    geometric_mean_ratio,
    parse_concurrency,
    percentile,
    ratio_table,
    summarize,
)
from inferstack.serving.cli import main


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize_and_ratios() -> None:
    a = summarize("a", 4, [0.002] * 300, 0, 1.5)
    b = summarize("b", 4, [0.001] * 100, 0, 1.0)
    assert (a.requests, a.throughput, a.p50_ms) == (300, 200.0, 2.0)
    rows = ratio_table([a, b], "a", "b")
    assert rows[1][:4] == ["4", "200", "100", "2.00x"]
    c, d = Point("a", 1, 50, 0, 1.0, 1, 1), Point("b", 1, 100, 0, 1.0, 1, 1)
    assert geometric_mean_ratio([a, b, c, d], "a", "b") == pytest.approx(1.0)  # sqrt(2 * 0.5)


@pytest.mark.parametrize("text", ["", "0", "1,x", "1,1000"])
def test_bad_concurrency(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_concurrency(text)
    assert caught.value.field == "--concurrency"


@pytest.mark.real_server
def test_a_short_sweep_measures_both_models_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--concurrency", "1,2", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " clients " in line and "req/s " in line and "p50" in line]
    assert len(lines) == 4  # 2 models x 2 levels, interleaved
    assert [line.split()[0] for line in lines] == ["demo-batched", "demo-unbatched"] * 2
    assert all("errors 0" in line for line in lines)
    assert "geometric mean over the sweep" in out and "ratio" in out


def test_bench_against_a_url_needs_both_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "127.0.0.1:1"]) == 2
    assert "--candidate/--baseline" in capsys.readouterr().err
