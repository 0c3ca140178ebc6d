"""Resource properties as plain data, whatever pulumi-policy wrapped them in.

The Analyzer hands rules read-only proxies (``_DictProxy``/``_ListProxy``) that are Mappings and
Sequences but not dicts and lists: ``json.dumps`` prints their repr and ``isinstance(x, list)`` is
False, so a rule written against plain data silently finds nothing. Every rule gets ``plain(props)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every Mapping as a dict and every non-string Sequence as a list, recursively."""
    if isinstance(value, Mapping):
        return {str(key): plain(value[key]) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(item) for item in value]
    return value
