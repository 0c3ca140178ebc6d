"""The stack keys: every key with its default and purpose (the docs' config reference), and the key a
component's field comes from, so that a component's error names what the deployer set.

Both are read off ``PlatformConfig``'s sections and the ``Feeds`` each setting declares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from pydantic import BaseModel

from inferstack.components.platform_config import NAMESPACE, Feeds, PlatformConfig, section_type


def _reference_rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}" if prefix else f"{NAMESPACE}:{field.alias or name}"
        section = section_type(field.annotation)
        if section is not None and field.annotation is not None and "tuple" not in str(field.annotation):
            yield from _reference_rows(section, f"{key}.")
            continue
        if section is not None:
            yield key, "list of objects", field.description or ""
            yield from _reference_rows(section, f"{key}[i].")
            continue
        default = "required" if field.is_required() else json.dumps(field.default)
        yield key, default, field.description or ""


def reference_table() -> str:
    """The README's config reference: every key, its default and what it is for."""
    rows = ["| key | default | what |", "|---|---|---|"]
    rows += [
        f"| `{key}` | {default} | {what} |" for key, default, what in _reference_rows(PlatformConfig, "")
    ]
    return "\n".join(rows)


def _fed_fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    """(component field, stack key) for every setting that declares what it feeds."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        section = section_type(field.annotation)
        if section is not None and "tuple" not in str(field.annotation):
            yield from _fed_fields(section, f"{key}.")
        for marker in field.metadata:
            if isinstance(marker, Feeds):
                yield from ((fed, key) for fed in marker.fields)


def stack_key(field: str) -> str:
    """The stack key a component's field comes from, in Pulumi's spelling; an element keeps its index.
    The longest declared field that ``field`` starts with wins (``gpu-spot-`` over ``gpu-``)."""
    fed = sorted(_fed_fields(PlatformConfig, f"{NAMESPACE}:"), key=lambda pair: -len(pair[0]))
    for source, key in fed:
        if source.endswith("-") and field.startswith(source):
            return key
        if field == source or field.startswith((f"{source}[", f"{source}.")):
            rest = field[len(source) :]
            return f"{key}{rest if rest.startswith('[') else ''}"
    return f"{NAMESPACE}:{field}"
