"""Runtime checks of a typed Args dataclass against its own annotations.

Type hints are not enforced when a stack file or another program fills in an Args object, and a
value of the wrong type (None for a count, a string for a list of names) would otherwise surface as
a TypeError deep inside a component, after resources were registered. Each field whose annotation is
a plain type, a dataclass, a Literal, an optional, or a sequence/mapping of strings is checked; others
(Pulumi inputs, providers) are left to the component's own checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from inferstack.infra.errors import InvalidInput


def _describe(hint: Any) -> str | None:
    """What a value of ``hint`` looks like, in words; None where this module does not check ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if hint in (int, float, str, bool):
        return {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}[hint]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a {hint.__name__}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args]
        return None if None in parts else " or ".join(p for p in parts if p)
    if origin in (Sequence, list, tuple) and args and args[0] is str:
        return "a list of strings"
    if origin in (Mapping, dict) and args == (str, str):
        return "a mapping of strings to strings"
    return None


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (Sequence, list, tuple):
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if origin in (Mapping, dict):
        return isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    return True


def check_field_types(args: Any) -> None:
    """Raise InvalidInput naming the first field of dataclass ``args`` whose value does not fit its type."""
    hints = typing.get_type_hints(type(args))
    for field in dataclasses.fields(args):
        hint = hints[field.name]
        allowed = _describe(hint)
        value = getattr(args, field.name)
        if allowed is not None and not _fits(value, hint):
            raise InvalidInput(field.name, value, allowed)
