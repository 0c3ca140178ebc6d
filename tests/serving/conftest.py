"""A real Triton, started once per test session, serving models shaped like real ones."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from moto.server import ThreadedMotoServer

from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.processes import RuntimeFailure, find_triton, free_port
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.build import build_model
from inferstack.serving.models.specs import BuiltModel, DynamicBatching, ModelOptions
from tests.conftest import unavailable


class FeaturesAndIds(torch.nn.Module):
    """FP32 features and INT64 ids (of a vocabulary of 10): two inputs of different dtypes, seeded weights."""

    def __init__(self, *, seed: int, features: int, width: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = torch.nn.Embedding(10, width)
        self.features = torch.nn.Linear(features, width)


class Ranker(FeaturesAndIds):
    """One score from 6 features and 3 ids."""

    def __init__(self) -> None:
        super().__init__(seed=7, features=6, width=8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.features(features) + self.embedding(ids).sum(dim=1)))


class Sequence(torch.nn.Module):
    """A variable-length axis in and out: per-position scores and a pooled vector."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.project = torch.nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.project(tokens)
        return projected.sum(dim=-1), projected.mean(dim=1)


BATCHING = ModelOptions(
    max_batch_size=16,
    dynamic_batching=DynamicBatching(preferred_batch_sizes=(8, 16), max_queue_delay_us=20_000),
)


def build_sequence(repository: Path, **options: Any) -> BuiltModel:
    """Sequence as model "sequence", the length of its tokens and positions variable."""
    return build_model(
        Sequence(),
        [torch.randn(2, 5, 4)],
        name="sequence",
        repository=repository,
        input_names=["tokens"],
        output_names=["positions", "pooled"],
        variable_axes={"tokens": [0], "positions": [0]},
        **options,
    )


def build_test_repository(path: Path) -> Path:
    build_model(
        Ranker(),
        [torch.randn(2, 6), torch.randint(0, 10, (2, 3))],
        name="ranker",
        repository=path,
        input_names=["features", "ids"],
        output_names=["score"],
        options=BATCHING,
    )
    build_sequence(path, options=BATCHING)
    # The demo in the cluster's format (libtorch): the runtime serves it through the python backend.
    # Two torch threads, not the served default of one per instance on this 2-core machine: the
    # real-metrics test drives it and needs a model slow enough that 32 Python clients queue it.
    build_demo_repository(path, target="pytorch_libtorch", torch_threads=2)
    return path


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for moto: real ones must never reach an emulator."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def triton_present() -> None:
    try:
        find_triton()
    except RuntimeFailure as error:
        unavailable(str(error))


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    repository = build_test_repository(tmp_path_factory.mktemp("repository"))
    with LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("runtime"), progress=print) as runtime:
        yield runtime


@pytest.fixture
def moto_endpoint(fake_aws_env: None) -> Iterator[str]:
    """A moto server on loopback, emptied first: moto keeps its buckets per process, not per server."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
