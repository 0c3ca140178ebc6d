"""Test helpers over the offline runner (``inferstack.stacks.offline``), which the CLI uses too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from inferstack.infra.errors import InvalidInput
from inferstack.stacks import offline
from inferstack.stacks.offline import ACCOUNT_ID, REGION, ZONES, Invoke, Recorded, Recording, run_program

__all__ = [
    "ACCOUNT_ID",
    "DEPLOYER",
    "DEPLOYER_ARGS",
    "REGION",
    "ZONES",
    "Recorded",
    "Recording",
    "answering",
    "any_value",
    "run_catching",
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


def run_catching(program: Callable[[], Any]) -> tuple[Recording, Exception | None]:
    """Run ``program`` under mocks: what it registered, and whatever it raised (None if nothing)."""
    caught: list[Exception] = []

    def body() -> None:
        try:
            program()
        except Exception as error:  # the caller decides which errors are defects
            caught.append(error)

    recording, _ = run_program(body)
    return recording, caught[0] if caught else None


def any_value(*plausible: Any) -> st.SearchStrategy[Any]:
    """What a careless stack file or caller may put anywhere: wrong types, edge numbers, near-misses."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
        st.sampled_from(plausible),
        st.lists(st.sampled_from([*plausible, "", "x"]), max_size=3),
        st.dictionaries(st.sampled_from(["name", "x"]), st.integers(0, 3), max_size=2),
    )


def answering(function: str, **result: str) -> dict[str, Invoke]:
    """``invokes`` for ``run_program`` where the provider function ``function`` (its token) answers
    ``result`` whatever it is asked."""
    return {function: lambda _: dict(result)}
