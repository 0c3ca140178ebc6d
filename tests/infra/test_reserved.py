"""Reserved capacity with managed node groups: a group per reservation, in its zone, whose launch
template targets it; a Capacity Block's group is of capacity type CAPACITY_BLOCK and launches in that
market; both start at zero nodes and the autoscaler, which prefers them, adds nodes as pods ask."""

from __future__ import annotations

import json

import pytest

from inferstack.infra.reserved import ReservedCapacity, group_name, reserved_plans
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recording

IDS = ["cr-0123456789abcdef0", "cr-0123456789abcdef1"]


def run(kind: str) -> Recording:
    reserved = {
        "kind": kind,
        "reservationIds": IDS,
        "instanceType": "g5.12xlarge",
        "instances": 2,
        "zone": "us-east-1b",
    }
    return offline.run_stack(
        ROOT / "stacks", "prod", {**DEPLOYER, "inferstack:gpu.reserved": json.dumps(reserved)}
    )


@pytest.mark.parametrize("kind", ["capacity-block", "odcr"])
def test_each_reservation_gets_a_group_that_launches_into_it(kind: str) -> None:
    recording = run(kind)
    groups = [g for g in recording.of_type("aws:eks/nodeGroup:NodeGroup") if "gpu-reserved" in g.name]
    templates = {t.urn: t.inputs for t in recording.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    subnets = {s.urn: s.inputs for s in recording.of_type("aws:ec2/subnet:Subnet")}
    targeted = []
    for group in groups:
        (template,) = [templates[u] for u in group.property_dependencies["launchTemplate"]]
        targeted.append(
            template["capacityReservationSpecification"]["capacityReservationTarget"]["capacityReservationId"]
        )
        zones = {subnets[u]["availabilityZone"] for u in group.property_dependencies["subnetIds"]}
        assert zones == {"us-east-1b"}
        assert group.inputs["instanceTypes"] == ["g5.12xlarge"]
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in group.inputs["taints"]
        scaling = group.inputs["scalingConfig"]
        if kind == "capacity-block":
            assert group.inputs["capacityType"] == "CAPACITY_BLOCK"
            assert template["instanceMarketOptions"] == {"marketType": "capacity-block"}
        else:
            assert group.inputs["capacityType"] == "ON_DEMAND" and "instanceMarketOptions" not in template
        # EKS waits for a new group's desired nodes, which a Capacity Block before its start never has.
        assert (scaling["minSize"], scaling["desiredSize"], scaling["maxSize"]) == (0, 0, 2)
    assert sorted(targeted) == IDS
    ordinary = [t for t in templates.values() if "capacityReservationSpecification" in t]
    assert len(ordinary) == len(IDS)  # no other group is tied to a reservation


def test_group_names_stay_put_when_reservations_are_added() -> None:
    one = reserved_plans(
        ReservedCapacity("odcr", (IDS[0],), "g5.12xlarge", 1, "us-east-1a"), ["us-east-1a", "us-east-1b"]
    )
    two = reserved_plans(
        ReservedCapacity("odcr", tuple(IDS), "g5.12xlarge", 1, "us-east-1a"), ["us-east-1a", "us-east-1b"]
    )
    assert one[0].name == two[0].name == group_name(IDS[0]) and two[1].name == group_name(IDS[1])
