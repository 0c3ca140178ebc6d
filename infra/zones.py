"""Availability zones: which of a region's zones a stack can use, and why not the others.

Pure: the stack program asks EC2 through Pulumi invokes (infra/network.py), `inferstack preflight`
asks it with the deployer's own credentials (infra/preflight.py), and both decide here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput

MIN_ZONES = 2


def check_zones(zones: Sequence[str]) -> None:
    if len(zones) < MIN_ZONES:
        raise InvalidInput("zones", list(zones), f"at least {MIN_ZONES} availability zones, so one can fail")
    if len(set(zones)) != len(zones):
        raise InvalidInput("zones", list(zones), "distinct availability zones")


# Zones where EKS refuses control-plane subnets (the EKS user guide's subnet requirements).
EKS_UNSUPPORTED_ZONE_IDS = frozenset({"use1-az3", "usw1-az2", "cac1-az3"})


@dataclass(frozen=True)
class Zone:
    """An availability zone by name and by id (the id is the same physical zone in every account)."""

    name: str
    zone_id: str  # the same physical zone in every account, unlike the name


def zone_problems(
    zones: Sequence[Zone], offerings: Mapping[str, Collection[str]], instance_types: Sequence[str]
) -> dict[str, str]:
    """Zone name -> why the stack cannot use it; zones not named are fine.

    ``offerings`` maps an instance type to the zones that offer it (EC2's instance type offerings).
    """
    problems = {}
    for zone in zones:
        missing = [t for t in instance_types if zone.name not in offerings.get(t, ())]
        if zone.zone_id in EKS_UNSUPPORTED_ZONE_IDS:
            problems[zone.name] = f"{zone.zone_id} does not support EKS"
        elif missing:
            problems[zone.name] = f"does not offer {', '.join(missing)}"
    return problems


def choose_zones(
    field: str,
    wanted: int | Sequence[str],
    zones: Sequence[Zone],
    offerings: Mapping[str, Collection[str]],
    instance_types: Sequence[str] = (),
) -> list[str]:
    """The first ``wanted`` usable zones, or exactly the ``wanted`` names if they are all usable."""
    problems = zone_problems(zones, offerings, instance_types)
    usable = [z.name for z in zones if z.name not in problems]
    why = "; ".join(f"{name} {reason}" for name, reason in problems.items()) or "none excluded"
    if isinstance(wanted, int):
        if wanted < MIN_ZONES:
            raise InvalidInput(field, wanted, f"at least {MIN_ZONES}, so one zone can fail")
        if len(usable) < wanted:
            raise InvalidInput(field, wanted, f"at most the {len(usable)} usable zones here ({why})")
        return usable[:wanted]
    try:
        check_zones(wanted)
    except InvalidInput as error:
        raise InvalidInput(field, error.value, error.allowed) from None
    for i, name in enumerate(wanted):
        if name not in usable:
            reason = problems.get(name, "not a zone of this region")
            raise InvalidInput(f"{field}[{i}]", name, f"a usable zone: {', '.join(usable)} ({name} {reason})")
    return list(wanted)
