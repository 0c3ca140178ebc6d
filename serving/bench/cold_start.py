"""`inferstack bench --cold-start`: how long a new replica takes to serve a big model, by where its bytes
come from, against the floor of fetching and loading those bytes at all.

One run, side by side: a generated TorchScript model of ``size_mb`` (a stack of wide Linear layers with
random weights) and the tiny demo model, each started by the local runtime (moto S3 + real Triton) three
ways: Triton reading S3 itself (``direct``), through the node cache from empty (``cold``), and through the
cache a previous replica filled (``warm``). The big model's share of a start is its ready time minus the
tiny model's in the same mode: what Triton itself costs to start cancels out. The floor is what no server
can beat on this machine: the same objects from the same emulated S3 with boto3's parallel transfer
manager, then ``torch.jit.load`` in-process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_cache import PARALLEL
from inferstack.serving.bench.figures import pyplot_for, save
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import EMULATOR_PART_BYTES, LocalRuntime

MODES = ("direct", "cold", "warm")
WIDTH = 4096  # one Linear layer: 4096 x 4096 float32 weights, 64 MiB
TARGET_RATIO = 1.3  # the cold share may take at most this much of the floor


@dataclass(frozen=True)
class Start:
    """One replica's start in one mode: when it served, how long its fill took, what it downloaded."""

    model: str  # "big" or "tiny"
    mode: str
    ready_s: float
    fill_s: float
    downloaded_bytes: int


@dataclass
class ColdStartReport:
    """A cold-start run: every start of every round, and the floor's download and load times."""

    size_bytes: int
    rounds: int
    starts: list[Start] = field(default_factory=list)
    floor_download_s: list[float] = field(default_factory=list)
    floor_load_s: list[float] = field(default_factory=list)

    def ready(self, model: str, mode: str) -> float:
        return statistics.median(s.ready_s for s in self.starts if s.model == model and s.mode == mode)

    def share(self, mode: str) -> float:
        """The big model's part of a start: its ready time minus the tiny model's, in the same mode."""
        return self.ready("big", mode) - self.ready("tiny", mode)

    @property
    def floor_s(self) -> float:
        return statistics.median(
            d + load for d, load in zip(self.floor_download_s, self.floor_load_s, strict=True)
        )

    def rows(self) -> list[dict[str, Any]]:
        floor = self.floor_s
        rows = []
        for mode in MODES:
            big = [s for s in self.starts if s.model == "big" and s.mode == mode]
            rows.append(
                {
                    "mode": mode,
                    "tiny_ready_s": self.ready("tiny", mode),
                    "big_ready_s": self.ready("big", mode),
                    "big_fill_s": statistics.median(s.fill_s for s in big),
                    "downloaded_mib": statistics.median(s.downloaded_bytes for s in big) / 2**20,
                    "model_share_s": self.share(mode),
                    "share_over_floor": self.share(mode) / floor,
                }
            )
        return rows

    @property
    def cold_within_target(self) -> bool:
        return self.share("cold") <= TARGET_RATIO * self.floor_s

    @property
    def warm_downloads_nothing(self) -> bool:
        return all(s.downloaded_bytes == 0 for s in self.starts if s.mode == "warm")


def check_size(size_mb: int) -> int:
    if isinstance(size_mb, bool) or not isinstance(size_mb, int) or not 64 <= size_mb <= 8192:
        raise InvalidInput(
            "--size-mb", size_mb, f"an integer from 64 to 8192 (one layer is {WIDTH**2 * 4 >> 20} MiB)"
        )
    return size_mb


def build_big_repository(path: Path, size_mb: int) -> Path:
    """A TorchScript model of about ``size_mb`` MiB: ``size_mb / 64`` Linear(4096, 4096) layers, random
    weights (seeded), as a repository folder named ``big``."""
    import torch

    from inferstack.serving.models.build import build_model
    from inferstack.serving.models.specs import ModelOptions

    layers = max(1, round(check_size(size_mb) * 2**20 / (WIDTH * WIDTH * 4)))
    torch.manual_seed(0)
    network = torch.nn.Sequential(*(torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers))).eval()
    build_model(
        network, [torch.randn(1, WIDTH)], name="big", repository=path, options=ModelOptions(max_batch_size=4)
    )
    return path


def floor(runtime: LocalRuntime, scratch: Path) -> tuple[float, float]:
    """(download, load) seconds: the big model's served objects from the runtime's S3 with boto3, all files
    at once, each in the GETs that are fastest on the emulator (one per object: see EMULATOR_PART_BYTES),
    then ``torch.jit.load`` of the model in this process."""
    import concurrent.futures

    import torch
    from boto3.s3.transfer import TransferConfig

    from inferstack.infra.model_cache import MANIFEST, parse_manifest

    s3 = runtime.s3_client()
    key = f"{runtime.prefix}/big/{MANIFEST}"
    manifest = parse_manifest(s3.get_object(Bucket=runtime.bucket, Key=key)["Body"].read(), where=key)
    config = TransferConfig(multipart_threshold=EMULATOR_PART_BYTES, multipart_chunksize=EMULATOR_PART_BYTES)
    scratch.mkdir(parents=True, exist_ok=True)
    targets = {relative: scratch / relative.replace("/", "_") for relative in manifest.wanted()}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        fetches = [
            pool.submit(s3.download_file, runtime.bucket, f"{runtime.prefix}/big/{r}", str(t), Config=config)
            for r, t in targets.items()
        ]
        for fetch in fetches:
            fetch.result()
    downloaded = time.perf_counter()
    model = next(t for r, t in targets.items() if r.endswith("/model.pt"))
    torch.jit.load(str(model), map_location="cpu")  # type: ignore[no-untyped-call]
    loaded = time.perf_counter()
    for target in targets.values():
        target.unlink()
    return downloaded - start, loaded - downloaded


def run_cold_start(
    *,
    size_mb: int = 512,
    rounds: int = 1,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ColdStartReport:
    check_size(size_mb)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 5:
        raise InvalidInput("--rounds", rounds, "an integer from 1 to 5")

    def say(message: str) -> None:
        if progress:
            progress(message)

    with tempfile.TemporaryDirectory(prefix="inferstack-cold-start-", dir=work_dir) as scratch:
        root = Path(scratch)
        say(f"building a {size_mb} MiB TorchScript model and the tiny demo model")
        repositories = {
            "tiny": build_demo_repository(root / "tiny-repository"),
            "big": build_big_repository(root / "big-repository", size_mb),
        }
        size = sum(p.stat().st_size for p in (root / "big-repository").rglob("*.pt"))
        report = ColdStartReport(size_bytes=size, rounds=rounds)
        for round_number in range(rounds):
            # The tiny and the big model of one mode start back to back, so they share the machine's
            # load of the moment; the order alternates between rounds.
            order: Sequence[str] = ("tiny", "big") if round_number % 2 == 0 else ("big", "tiny")
            for mode in MODES:
                for model in order:
                    say(f"round {round_number + 1}/{rounds}: {model} model, {mode}")
                    runtime = LocalRuntime(
                        repositories[model],
                        work_dir=root / f"run-{model}-{mode}-{round_number}",
                        model_cache=mode != "direct",
                        model_cache_dir=root / f"cache-{model}-{round_number}",  # cold fills it, warm reuses
                        model_cache_gib=4 * max(1, size / 2**30),
                        startup_timeout_s=600,
                    )
                    with runtime:
                        started = runtime.replica_starts[0]
                        report.starts.append(
                            Start(model, mode, started.ready_s, started.fill_s, started.downloaded_bytes)
                        )
                        if model == "big" and mode == "direct":
                            download_s, load_s = floor(runtime, root / "floor")
                            report.floor_download_s.append(download_s)
                            report.floor_load_s.append(load_s)
                    say(f"  ready in {started.ready_s:.2f} s (fill {started.fill_s:.2f} s)")
        return report


def table(report: ColdStartReport) -> list[list[str]]:
    lines = [
        ["source", "tiny ready", "big ready", "big fill", "downloaded", "model's share", "share / floor"]
    ]
    for row in report.rows():
        lines.append(
            [
                row["mode"],
                f"{row['tiny_ready_s']:.2f} s",
                f"{row['big_ready_s']:.2f} s",
                f"{row['big_fill_s']:.2f} s",
                f"{row['downloaded_mib']:.0f} MiB",
                f"{row['model_share_s']:.2f} s",
                f"{row['share_over_floor']:.2f}x",
            ]
        )
    download = statistics.median(report.floor_download_s)
    load = statistics.median(report.floor_load_s)
    lines.append(["floor", "", "", f"{download:.2f} s get", "", f"{report.floor_s:.2f} s", "1.00x"])
    lines[-1][3] += f" + {load:.2f} s load"
    return lines


def write_plot(report: ColdStartReport, path: Path) -> Path:
    """One bar per source: the model's share of the start, split into the fill (cache modes) or the
    download (floor) and the rest (Triton's own load; everything, for Triton reading S3 itself)."""
    pyplot = pyplot_for(path, option="--out")
    rows = report.rows()
    labels = [*(str(r["mode"]) for r in rows), "floor"]
    shares = [*(float(r["model_share_s"]) for r in rows), report.floor_s]
    fetch = [*(float(r["big_fill_s"]) for r in rows), statistics.median(report.floor_download_s)]
    figure, axes = pyplot.subplots(figsize=(8, 4.4))
    colours = ["#c44e52", "#4c72b0", "#55a868", "#8c8c8c"]
    axes.bar(labels, fetch, color=colours, hatch="//", edgecolor="white")
    bars = axes.bar(labels, [s - f for s, f in zip(shares, fetch, strict=True)], bottom=fetch, color=colours)
    axes.bar_label(bars, labels=[f"{s:.2f} s\n{s / report.floor_s:.2f}x" for s in shares], padding=3)
    axes.axhline(TARGET_RATIO * report.floor_s, color="#333333", linestyle="--", linewidth=1)
    axes.annotate(f"{TARGET_RATIO}x floor", (-0.45, TARGET_RATIO * report.floor_s), va="bottom", fontsize=9)
    axes.set_ylabel("seconds the model adds to a replica's start")
    axes.legend(
        handles=[
            pyplot.Rectangle((0, 0), 1, 1, facecolor="#8c8c8c", hatch="//", edgecolor="white"),
            pyplot.Rectangle((0, 0), 1, 1, facecolor="#8c8c8c"),
        ],
        labels=["fill (cache) / GET (floor)", "the rest: Triton's load"],
        loc="upper right",
        fontsize=8,
    )
    axes.set_title(
        f"What a {report.size_bytes / 2**20:.0f} MiB TorchScript model adds to a replica's start\n"
        f"(ready time minus the tiny model's, median of {report.rounds} round(s); "
        "floor: GET + torch.jit.load)",
        fontsize=10,
    )
    axes.margins(y=0.25)
    return save(pyplot, figure, path)
