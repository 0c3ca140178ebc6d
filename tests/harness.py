"""Test helpers over the offline runner (``inferstack.policies.offline``), which the CLI uses too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.policies.offline import ACCOUNT_ID, REGION, ZONES, Recorded, Recording, run_program

__all__ = ["ACCOUNT_ID", "REGION", "ZONES", "Recorded", "Recording", "run_invalid", "run_program"]


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
