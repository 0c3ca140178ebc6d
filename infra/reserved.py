"""Reserved GPU capacity: Capacity Blocks for ML and On-Demand Capacity Reservations (ODCR).

Both are paid for by the hour whether instances run in them or not, so they are used before any
other capacity. A reservation lives in one zone and holds instances of one type. With managed node
groups each reservation gets a group of its own in its zone, whose launch template targets it (a
Capacity Block also needs the group's capacity type CAPACITY_BLOCK and the template's market type
``capacity-block``); with Karpenter one NodePool of capacity type ``reserved`` selects them by id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import lookup
from inferstack.infra.nodegroups import GPU_TAINT, NodeGroupPlan, gpu_plans

ReservationKind = Literal["capacity-block", "odcr"]
_RESERVATION_ID = re.compile(r"^cr-[0-9a-f]{8}([0-9a-f]{9})?$")


@dataclass(frozen=True)
class ReservedCapacity:
    """Reserved GPU capacity (Capacity Blocks for ML or ODCRs): the reservations, their type, size and
    zone."""

    kind: ReservationKind
    reservation_ids: tuple[str, ...]
    instance_type: str
    instances: int  # each reservation holds this many
    zone: str | None = None  # where the reservations are: managed node groups must know it

    @property
    def total_instances(self) -> int:
        return self.instances * len(self.reservation_ids)


def validate_reserved(reserved: ReservedCapacity, field: str = "reserved") -> None:
    if not reserved.reservation_ids:
        raise InvalidInput(f"{field}.reservation_ids", [], "one or more reservation ids (cr-...)")
    for i, rid in enumerate(reserved.reservation_ids):
        if not _RESERVATION_ID.match(rid):
            raise InvalidInput(f"{field}.reservation_ids[{i}]", rid, "a capacity reservation id (cr-...)")
    names = [group_name(rid) for rid in reserved.reservation_ids]
    if len(set(names)) != len(names):
        raise InvalidInput(
            f"{field}.reservation_ids",
            list(reserved.reservation_ids),
            "ids that differ in their last 8 digits",
        )
    if not lookup(reserved.instance_type, field=f"{field}.instance_type").is_gpu:
        raise InvalidInput(f"{field}.instance_type", reserved.instance_type, "a GPU instance type")
    if reserved.instances < 1:
        raise InvalidInput(f"{field}.instances", reserved.instances, "an integer >= 1")


def group_name(reservation_id: str) -> str:
    """A reservation's group, named by the id's last 8 digits: short enough for EKS's 63 characters."""
    return f"gpu-reserved-{reservation_id[-8:]}"


def reserved_plans(reserved: ReservedCapacity, zones: Sequence[str]) -> list[NodeGroupPlan]:
    """One managed group per reservation, in the reservation's zone, sized to what it holds."""
    validate_reserved(reserved)
    if reserved.zone is None or reserved.zone not in zones:
        raise InvalidInput(
            "reserved.zone",
            reserved.zone,
            f"the zone the reservations are in, one of the stack's {list(zones)}",
        )
    # The on-demand group's labels, taint, AMI and disk: a reserved node serves the same pods.
    template = gpu_plans(zones, instance_type=reserved.instance_type, max_size=reserved.instances)[0]
    return [
        NodeGroupPlan(
            name=group_name(rid),
            zones=(reserved.zone,),
            capacity_type="CAPACITY_BLOCK" if reserved.kind == "capacity-block" else "ON_DEMAND",
            instance_types=(reserved.instance_type,),
            ami_type=template.ami_type,
            # Zero at first: EKS waits for a group's desired nodes to join, and a Capacity Block before
            # its start launches none. The autoscaler, which tries these groups first, adds them as
            # pods ask (paid by the hour anyway).
            min_size=0,
            desired_size=0,
            max_size=reserved.instances,
            labels={**template.labels},
            taints=(GPU_TAINT,),
            disk_gib=template.disk_gib,
            capacity_reservation_id=rid,
        )
        for rid in reserved.reservation_ids
    ]
