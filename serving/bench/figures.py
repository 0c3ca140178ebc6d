"""How the benchmarks' charts are drawn and saved: matplotlib without a display, PNG files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput


def pyplot_for(path: Path, *, option: str) -> Any:
    """matplotlib's pyplot on its file-only backend, or one line naming ``option`` when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise InvalidInput(
            option, str(path), "matplotlib installed: pip install 'inferstack[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display here, and none needed
    from matplotlib import pyplot

    return pyplot


def save(pyplot: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
