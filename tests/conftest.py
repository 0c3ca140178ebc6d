"""Shared test fixtures: the vendored third-party schemas and the real tools some tests need.

Locally a missing tool or vendor folder skips with the reason printed; in CI (CI set) it fails instead,
so the real-server tests can never be skipped silently there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = bool(os.environ.get("CI"))


def packages_loaded_by(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``modules``."""
    code = (
        f"import sys, {', '.join(modules)}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(found.stdout.split())


def unavailable(reason: str) -> None:
    """Skip (locally) or fail (in CI) a test whose real dependency is missing."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vendor_dir() -> Path:
    """``../shared/vendor`` beside the checkout, or ``$INFERSTACK_VENDOR_DIR``."""
    path = Path(os.environ.get("INFERSTACK_VENDOR_DIR", ROOT.parent / "shared" / "vendor"))
    if not (path / "crds").is_dir() or not (path / "charts").is_dir():
        unavailable(f"vendored chart values and CRD schemas not found at {path} (set INFERSTACK_VENDOR_DIR)")
    return path


def require_tool(name: str) -> str:
    """The path of an executable on PATH, or skip/fail naming it."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"`{name}` is not on PATH (bash .ci/bootstrap installs it)")
    assert path is not None
    return path
