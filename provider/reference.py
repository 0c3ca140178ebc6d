"""The component reference, generated from the provider's schema (the docs site's components page):
each component's inputs and outputs, and every type they use, in the spelling every language sees."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from pulumi.provider.experimental.component import ComponentProvider

from inferstack.provider.components import InferencePlatform, TritonModelService


def schema() -> dict[str, Any]:
    provider = ComponentProvider(
        [InferencePlatform, TritonModelService], "inferstack", version=metadata.version("inferstack")
    )
    return dict(json.loads(provider.schema or "{}"))


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit(":", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if prop.get("type") == "array":
        return f"list of {_type(prop['items'])}"
    return str(prop.get("type", "any"))


def _table(properties: dict[str, Any], required: list[str]) -> list[str]:
    rows = ["| property | type | required | what |", "|---|---|---|---|"]
    rows += [
        f"| `{name}` | {_type(prop)} | {'yes' if name in required else ''} | "
        f"{prop.get('description', '').replace('|', '/').replace(chr(10), ' ')} |"
        for name, prop in properties.items()
    ]
    return rows


def reference() -> str:
    """Markdown: each component (inputs, outputs), then each type."""
    found = schema()
    out: list[str] = []
    for token, resource in found["resources"].items():
        out += [f"## {token.rsplit(':', 1)[-1]}", "", f"`{token}`: {resource.get('description', '')}", ""]
        out += [
            "**Inputs**",
            "",
            *_table(resource["inputProperties"], resource.get("requiredInputs", [])),
            "",
        ]
        out += ["**Outputs**", "", *_table(resource["properties"], []), ""]
    for token, typ in found["types"].items():
        out += [f"### {token.rsplit(':', 1)[-1]}", "", typ.get("description", ""), ""]
        out += [*_table(typ["properties"], typ.get("required", [])), ""]
    return "\n".join(out)
