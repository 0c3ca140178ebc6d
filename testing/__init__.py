"""Unit tests for your own Pulumi program that uses inferstack's components, under the Pulumi SDK's mocks.

One line, as Pulumi's testing guide sets mocks up, before your program is imported::

    import inferstack.testing
    inferstack.testing.set_mocks()                      # or set_mocks(region="eu-west-1")

``Mocks`` answers every invoke the components make (region, partition, caller identity, zones and
zone ids, instance type offerings, the region's S3 KMS key, a hosted zone, a session's issuer) and
gives each resource the outputs later resources read (an EKS cluster's endpoint and OIDC issuer, node
groups' ASGs, bucket names, random passwords, a LoadBalancer Service's hostname), for the region and
partition you name (``us-gov-west-1`` builds ``arn:aws-us-gov:...``). Add or override an invoke with
``invokes={"aws:...:getX": lambda args: {...}}``.

``record(program)`` runs a program function and returns every resource it registered, with its inputs
in the engine's form, for assertions that need the whole graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi

from inferstack.stacks.offline import REGION, Invoke, Recorded, Recording, RecordingMocks, run_program

__all__ = ["REGION", "Mocks", "Recorded", "Recording", "record", "set_mocks"]


class Mocks(RecordingMocks):
    """``pulumi.runtime.Mocks`` that answer whatever inferstack's components ask, for one region."""

    def __init__(self, region: str = REGION, invokes: Mapping[str, Invoke] | None = None) -> None:
        super().__init__(dict(invokes or {}), region=region)


def set_mocks(
    region: str = REGION,
    *,
    invokes: Mapping[str, Invoke] | None = None,
    project: str = "project",
    stack: str = "stack",
    preview: bool = False,
) -> Mocks:
    """Install ``Mocks`` for the rest of the process (``pulumi.runtime.set_mocks``); returns them."""
    mocks = Mocks(region, invokes)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview)
    return mocks


def record(
    program: Callable[[], Any],
    *,
    region: str = REGION,
    config: Mapping[str, str] | None = None,
    invokes: Mapping[str, Invoke] | None = None,
    project: str = "project",
    stack: str = "stack",
) -> tuple[Recording, Any]:
    """Run ``program`` under ``Mocks``: every resource it registered, and its resolved return value.
    ``config`` is the stack config the program reads (``{"project:key": "value"}``; ``pulumi.Config()``
    reads the ``project`` namespace)."""
    return run_program(
        program,
        invokes=dict(invokes or {}),
        config={"aws:region": region, **(config or {})},
        project=project,
        stack=stack,
    )
