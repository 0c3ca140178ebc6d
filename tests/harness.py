"""Test helpers over the offline runner (``inferstack.policies.offline``), which the CLI uses too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.policies import offline
from inferstack.policies.offline import ACCOUNT_ID, REGION, ZONES, Recorded, Recording, run_program

__all__ = [
    "ACCOUNT_ID",
    "DEPLOYER",
    "DEPLOYER_ARGS",
    "REGION",
    "ZONES",
    "Recorded",
    "Recording",
    "run_invalid",
    "run_program",
    "run_stack",
]

# What a deployer sets before the first `pulumi up` (the committed stack files leave it to them);
# a documentation range (RFC 5737), as CI passes it to `inferstack plan/policy check -c`.
DEPLOYER = {"inferstack:cluster.publicAccessCidrs": '["198.51.100.7/32"]'}
DEPLOYER_ARGS = [arg for key, value in DEPLOYER.items() for arg in ("-c", f"{key}={value}")]


def run_stack(stacks_dir: Path, stack: str) -> Recording:
    """A committed stack as its deployer would run it."""
    return offline.run_stack(stacks_dir, stack, DEPLOYER)


def run_invalid(program: Callable[[], Any], **kwargs: Any) -> tuple[Recording, InvalidInput]:
    """Run ``program`` under mocks, expecting bad input: what it registered, and the error it raised."""
    caught: list[InvalidInput] = []

    def body() -> None:
        try:
            program()
        except InvalidInput as error:
            caught.append(error)

    recording, _ = run_program(body, **kwargs)
    if not caught:
        raise AssertionError("expected InvalidInput, nothing was raised")
    return recording, caught[0]
