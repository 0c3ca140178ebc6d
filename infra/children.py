"""The options every inferstack component gives its children: the one rule for their order.

The Python SDK does not pass a component's ``depends_on`` down to its children: without this rule, a
ScaledObject inside a service that "depends on" KEDA would still race KEDA's CRD, and a Helm release
inside a component that "depends on" the node groups would wait for pods that have nowhere to run.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi


def inherited_dependencies(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """What a component was told to wait for, for its children to wait for too."""
    given = opts.depends_on if opts is not None else None
    if given is None:
        return []
    if isinstance(given, pulumi.Resource):
        return [given]
    resources = [r for r in given if isinstance(r, pulumi.Resource)] if isinstance(given, Sequence) else []
    if isinstance(given, Sequence) and len(resources) == len(given):
        return resources
    raise TypeError("depends_on of an inferstack component: a resource or a list of resources")


def child_options(
    parent: pulumi.Resource,
    opts: pulumi.ResourceOptions | None,
    *,
    after: Sequence[pulumi.Resource] = (),
) -> pulumi.ResourceOptions:
    """A child's options: parented (so on the providers its component was given, through
    ``ResourceOptions(provider=...)``), after what its component waits for and ``after``."""
    return pulumi.ResourceOptions(parent=parent, depends_on=[*inherited_dependencies(opts), *after])
