"""JSON files a user names on the command line, read into an object or refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput


def json_object(path: Path, field: str, *, readable: str, shaped: str) -> dict[str, Any]:
    """The JSON object in ``path``, given as ``field``; refused naming ``field`` when the file cannot
    be read or parsed ("a readable ``readable``") or holds no object ("a JSON object ``shaped``")."""
    try:
        given = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidInput(field, str(path), f"a readable {readable} ({error})") from None
    if not isinstance(given, dict):
        raise InvalidInput(field, str(path), f"a JSON object {shaped}")
    return given
