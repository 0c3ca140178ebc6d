"""How far two sets of named output arrays are apart: Triton against PyTorch, a canary against stable."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def compare(expected: dict[str, Array], actual: dict[str, Array]) -> float:
    """Largest absolute difference over all outputs; inf where names, shapes or dtypes disagree.

    Integers and booleans must match exactly (any difference is inf): ids and masks are not approximate.
    """
    if set(expected) != set(actual):
        return float("inf")
    worst = 0.0
    for name, want in expected.items():
        got = actual[name]
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            return float("inf")
        if want.dtype.kind in "biu":
            worst = max(worst, 0.0 if np.array_equal(want, got) else float("inf"))
        else:
            worst = max(
                worst, float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)), initial=0.0))
            )
    return worst
