"""A small IAM policy evaluator, enough to check least privilege of the documents inferstack writes.

Explicit Deny wins, then any Allow; Action/Resource wildcards and the StringEquals / StringLike /
Bool / StringEqualsIfExists / ForAllValues:StringEquals condition operators are supported (a
multi-valued key such as ``aws:TagKeys`` is given as a list). Anything else in a policy makes it raise, so a test can
never pass by evaluating a policy it does not understand.
"""

from __future__ import annotations

import fnmatch
from typing import Any


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(conditions: dict[str, Any], context: dict[str, Any]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = context.get(key)
            if operator == "ForAllValues:StringEquals":
                # Every value given is among the expected ones (none given: it holds, as in IAM).
                if not all(value in _list(expected) for value in _list(actual or [])):
                    return False
                continue
            if operator == "StringEqualsIfExists":
                if actual is not None and actual not in _list(expected):
                    return False
                continue
            if actual is None:
                return False
            if operator == "StringEquals" or operator == "Bool":
                ok = actual in [str(e).lower() if operator == "Bool" else e for e in _list(expected)]
            elif operator == "StringLike":
                ok = any(fnmatch.fnmatchcase(actual, pattern) for pattern in _list(expected))
            else:
                raise ValueError(f"condition operator {operator} not understood by this evaluator")
            if not ok:
                return False
    return True


def allowed(
    policy: dict[str, Any], action: str, resource: str, context: dict[str, Any] | None = None
) -> bool:
    context = context or {}
    decision = False
    for statement in _list(policy["Statement"]):
        unknown = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition", "Principal"}
        if unknown:
            raise ValueError(f"statement keys {unknown} not understood by this evaluator")
        if not any(fnmatch.fnmatchcase(action, a) for a in _list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _list(statement["Resource"])):
            continue
        if not _conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            return False
        decision = True
    return decision
