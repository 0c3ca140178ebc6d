"""The one error type for bad input, used by every layer.

Every message names the field, the value given and what is allowed, so a user can fix a stack
file or a command line without reading code. Raised before any resource is registered.
"""

from __future__ import annotations

from typing import Any


class InvalidInput(ValueError):
    """Bad input: ``field`` had ``value``; ``allowed`` says what would be accepted."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        # The value first, then where it was given and what would do: "'two': not valid for
        # inferstack:network.zones: a number of zones or a list of zone names".
        super().__init__(f"{value!r}: not valid for {field}: {allowed}")
