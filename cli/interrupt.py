"""Stopping on Ctrl-C or SIGTERM, at any moment: the signal raises KeyboardInterrupt and is remembered.

A process started in the background by a non-interactive shell inherits SIGINT ignored, and a library
may catch a KeyboardInterrupt raised inside it; so the handler is installed explicitly, and long
commands call ``check()`` at each step (``local up`` does in its progress lines) to raise it again.
"""

from __future__ import annotations

import signal
import threading
from typing import NoReturn

_requested = threading.Event()


def _handler(_signum: int, _frame: object) -> NoReturn:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    _requested.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if a stop was asked for (and swallowed on its way)."""
    if _requested.is_set():
        raise KeyboardInterrupt
