"""CRD validation rules (``x-kubernetes-validations``) evaluated by a real CEL implementation (cel-python).

As the API server does on a create: each rule is evaluated at the schema node that declares it, with
``self`` bound to the object's value there, and only where that value is present; a rule that reads
``oldSelf`` is a transition rule, which applies to updates only. A rule that does not hold yields the
CRD's own message (its ``messageExpression`` evaluated, else its ``message``, else ``failed rule: ...``).

Kubernetes adds CEL libraries beyond the standard ones; the two Karpenter's rules call are provided
with the API server's semantics: ``<string>.find(regex)`` (the first match, or "") and
``<string>.split(separator)``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import celpy
from celpy import celtypes


def _find(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    match = re.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])


KUBERNETES_FUNCTIONS = {"find": _find, "split": _split}
_ENVIRONMENT = celpy.Environment()


@cache
def _program(rule: str) -> celpy.Runner:
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=KUBERNETES_FUNCTIONS)


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as CEL sees it under its schema: an ``integer`` field is an int even where the
    engine carried it as 2.0 (Pulumi's numbers are floats), as the API server decodes it."""
    kind = schema.get("type")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return celtypes.MapType(
            {
                celtypes.StringType(k): to_cel(
                    properties.get(k) or (extra if isinstance(extra, dict) else {}), v
                )
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        items = schema.get("items")
        return celtypes.ListType([to_cel(items if isinstance(items, dict) else {}, v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    int_or_string = schema.get("x-kubernetes-int-or-string")
    if isinstance(value, (int, float)) and (kind == "integer" or int_or_string) and float(value).is_integer():
        return celtypes.IntType(int(value))
    return celpy.json_to_cel(value)


def _evaluate(rule: str, schema: dict[str, Any], value: Any) -> Any:
    try:
        return _program(rule).evaluate({"self": to_cel(schema, value)})
    except celpy.CELEvalError as error:
        return error


def _message(validation: dict[str, Any], schema: dict[str, Any], value: Any) -> str:
    expression = validation.get("messageExpression")
    if expression:
        return str(_evaluate(expression, schema, value))
    return str(validation.get("message") or f"failed rule: {validation['rule']}")


def cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every rule of ``schema`` (recursively) that ``value`` breaks, as ``path: message``."""
    errors: list[str] = []
    for validation in schema.get("x-kubernetes-validations") or []:
        rule = validation["rule"]
        if "oldSelf" in rule:
            continue  # a transition rule: nothing to compare with on a create
        result = _evaluate(rule, schema, value)
        if isinstance(result, celpy.CELEvalError):
            errors.append(f"{path or '<root>'}: rule {rule!r} could not be evaluated: {result}")
        elif not bool(result):
            where = path + str(validation.get("fieldPath", ""))
            errors.append(f"{where or '<root>'}: Invalid value: {_message(validation, schema, value)}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key) or (extra if isinstance(extra, dict) else None)
            if child is not None:
                errors += cel_errors(child, item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors
