"""Network: subnet math (pure) and the resources the component registers (mocks)."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferstack.infra.errors import InvalidInput
from inferstack.infra.network import Network, NetworkArgs, plan_subnets
from inferstack.infra.zones import Zone, choose_zones, zone_problems
from tests.harness import ZONES, run_invalid, run_program

Z3 = ["us-east-1a", "us-east-1b", "us-east-1c"]


def test_default_layout() -> None:
    plans = plan_subnets("10.0.0.0/16", Z3, private_prefix=19, public_prefix=24)
    assert [(p.tier, p.zone, p.cidr) for p in plans] == [
        ("private", "us-east-1a", "10.0.0.0/19"),
        ("private", "us-east-1b", "10.0.32.0/19"),
        ("private", "us-east-1c", "10.0.64.0/19"),
        ("public", "us-east-1a", "10.0.96.0/24"),
        ("public", "us-east-1b", "10.0.97.0/24"),
        ("public", "us-east-1c", "10.0.98.0/24"),
    ]


@given(
    vpc_prefix=st.integers(16, 24),
    zones=st.integers(2, 6),
    private=st.integers(17, 28),
    public=st.integers(17, 28),
)
def test_subnets_never_overlap_and_stay_inside_the_vpc(
    vpc_prefix: int, zones: int, private: int, public: int
) -> None:
    vpc = ipaddress.IPv4Network(f"10.0.0.0/{vpc_prefix}")
    names = [f"z{i}" for i in range(zones)]
    try:
        plans = plan_subnets(str(vpc), names, private_prefix=private, public_prefix=public)
    except InvalidInput as error:
        assert error.field in ("vpc_cidr", "private_prefix", "public_prefix")
        fits = private > vpc_prefix and public > vpc_prefix
        assert not fits or zones * (2 ** (32 - private) + 2 ** (32 - public)) > vpc.num_addresses
        return
    networks = [ipaddress.IPv4Network(p.cidr) for p in plans]
    assert len(networks) == 2 * zones
    assert all(n.subnet_of(vpc) for n in networks)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(networks, 2))


@pytest.mark.parametrize(
    ("cidr", "zones", "private", "public", "field"),
    [
        ("10.0.0.0/16", ["a"], 19, 24, "zones"),
        ("10.0.0.0/16", ["a", "a"], 19, 24, "zones"),
        ("10.0.0.0/24", Z3, 26, 28, "vpc_cidr"),  # 3 x (64 + 16) = 240 fits; see next case
        ("10.0.0.0/24", Z3, 25, 28, "vpc_cidr"),  # 3 x (128 + 16) = 432 > 256
        ("10.0.0.1/16", Z3, 19, 24, "vpc_cidr"),
        ("not-a-cidr", Z3, 19, 24, "vpc_cidr"),
        ("10.0.0.0/8", Z3, 19, 24, "vpc_cidr"),
        ("10.0.0.0/16", Z3, 16, 24, "private_prefix"),
    ],
)
def test_bad_layouts(cidr: str, zones: list[str], private: int, public: int, field: str) -> None:
    if cidr == "10.0.0.0/24" and private == 26:
        assert len(plan_subnets(cidr, zones, private_prefix=private, public_prefix=public)) == 6
        return
    with pytest.raises(InvalidInput) as caught:
        plan_subnets(cidr, zones, private_prefix=private, public_prefix=public)
    assert caught.value.field == field and str(caught.value.value) in str(caught.value)


def by_type(recording: object, token: str) -> list[dict[str, object]]:
    return [r.inputs for r in recording.of_type(token)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("nat", "gateways"), [("per_zone", 3), ("single", 1), ("none", 0)])
def test_network_resources(nat: str, gateways: int) -> None:
    args = NetworkArgs(cluster_name="prod", nat=nat, vpc_endpoints=nat == "none")  # type: ignore[arg-type]
    recording, _ = run_program(lambda: Network("net", args))
    subnets = recording.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.inputs["availabilityZone"] for s in subnets) == sorted(ZONES * 2)
    assert all(s.parent_type == "inferstack:network:Network" for s in subnets)
    for subnet in subnets:
        tags = subnet.inputs["tags"]
        assert tags["kubernetes.io/cluster/prod"] == "shared"
        assert subnet.inputs["mapPublicIpOnLaunch"] is False
        role = "kubernetes.io/role/internal-elb" if "private" in subnet.name else "kubernetes.io/role/elb"
        assert tags[role] == "1"
    nat_gateways = recording.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nat_gateways) == gateways
    private_tables = [t for t in recording.of_type("aws:ec2/routeTable:RouteTable") if "private" in t.name]
    assert len(private_tables) == 3
    routes = [t.inputs.get("routes", []) for t in private_tables]
    assert all(len(r) == (1 if gateways else 0) for r in routes)
    vpc = recording.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["enableDnsHostnames"] and vpc.inputs["cidrBlock"] == "10.0.0.0/16"


@pytest.mark.parametrize("nat", ["per_zone", "single"])
def test_s3_traffic_takes_the_gateway_endpoint_not_the_nat(nat: str) -> None:
    """Model pulls and image layers come from S3: a gateway endpoint on every private route table
    keeps them off the NAT's per-GB charge, without any interface endpoint."""
    args = NetworkArgs(cluster_name="prod", nat=nat)  # type: ignore[arg-type]
    recording, _ = run_program(lambda: Network("net", args))
    (s3,) = recording.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert s3.inputs["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert s3.inputs["vpcEndpointType"] == "Gateway"
    private_tables = {f"net-private-{zone}-id" for zone in ZONES}
    assert set(s3.inputs["routeTableIds"]) == private_tables


def test_nat_per_zone_routes_each_zone_through_its_own_gateway() -> None:
    recording, _ = run_program(lambda: Network("net", NetworkArgs(cluster_name="prod")))
    for zone in ZONES:
        table = recording.one("aws:ec2/routeTable:RouteTable", f"net-private-{zone}")
        assert table.inputs["routes"][0]["natGatewayId"] == f"net-nat-{zone}-id"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (NetworkArgs(cluster_name="prod", zones=["us-east-1a"]), "zones"),
        (NetworkArgs(cluster_name="prod", nat="two"), "nat"),  # type: ignore[arg-type]
        # No NAT and no endpoints: nodes could neither join nor pull an image.
        (NetworkArgs(cluster_name="prod", nat="none"), "nat"),
        (NetworkArgs(cluster_name="prod", zone_count=4), "zone_count"),
        (NetworkArgs(cluster_name="prod", vpc_cidr="10.0.0.0/18"), "vpc_cidr"),
    ],
)
def test_bad_input_registers_nothing(args: NetworkArgs, field: str) -> None:
    recording, error = run_invalid(lambda: Network("net", args))
    assert error.field == field
    assert recording.resources == []


def test_without_nat_the_nodes_reach_aws_through_endpoints() -> None:
    args = NetworkArgs(cluster_name="prod", nat="none", vpc_endpoints=True)
    recording, _ = run_program(lambda: Network("net", args))
    endpoints = {
        r.inputs["serviceName"]: r.inputs for r in recording.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    needed = {"ecr.api", "ecr.dkr", "sts", "ec2", "logs", "eks-auth"}
    assert set(endpoints) == {f"com.amazonaws.us-east-1.{s}" for s in needed | {"s3"}}
    s3 = endpoints["com.amazonaws.us-east-1.s3"]
    # A gateway endpoint works through the private route tables (image layers come from S3).
    assert s3["vpcEndpointType"] == "Gateway" and len(s3["routeTableIds"]) == 3
    for service in needed:
        interface = endpoints[f"com.amazonaws.us-east-1.{service}"]
        assert interface["vpcEndpointType"] == "Interface" and interface["privateDnsEnabled"] is True
        assert sorted(interface["subnetIds"]) == sorted(f"net-private-{z}-id" for z in ZONES)
    group = recording.one("aws:ec2/securityGroup:SecurityGroup", "net-endpoints").inputs
    assert group["ingress"][0]["fromPort"] == 443 and group["ingress"][0]["cidrBlocks"] == ["10.0.0.0/16"]


ZONE_LIST = [
    Zone("us-east-1a", "use1-az1"),
    Zone("us-east-1b", "use1-az3"),
    Zone("us-east-1c", "use1-az4"),
    Zone("us-east-1d", "use1-az6"),
]
OFFERED = {
    "g5.xlarge": {"us-east-1a", "us-east-1b", "us-east-1c"},
    "g6.xlarge": {"us-east-1a", "us-east-1c", "us-east-1d"},
}


def test_zones_that_cannot_host_the_stack_are_skipped_with_the_reason() -> None:
    problems = zone_problems(ZONE_LIST, OFFERED, ["g5.xlarge", "g6.xlarge"])
    assert problems == {
        "us-east-1b": "use1-az3 does not support EKS",
        "us-east-1d": "does not offer g5.xlarge",
    }
    assert choose_zones("zones", 2, ZONE_LIST, OFFERED, ["g5.xlarge", "g6.xlarge"]) == [
        "us-east-1a",
        "us-east-1c",
    ]
    with pytest.raises(InvalidInput) as caught:
        choose_zones("inferstack:network.zones", 3, ZONE_LIST, OFFERED, ["g5.xlarge", "g6.xlarge"])
    assert (
        caught.value.field == "inferstack:network.zones"
        and "use1-az3 does not support EKS" in caught.value.allowed
    )


def test_pinned_zones_are_checked_too() -> None:
    assert choose_zones("zones", ["us-east-1c", "us-east-1a"], ZONE_LIST, OFFERED, ["g5.xlarge"]) == [
        "us-east-1c",
        "us-east-1a",
    ]
    with pytest.raises(InvalidInput) as caught:
        choose_zones(
            "inferstack:network.zones", ["us-east-1a", "us-east-1d"], ZONE_LIST, OFFERED, ["g5.xlarge"]
        )
    assert (
        caught.value.field == "inferstack:network.zones[1]"
        and "does not offer g5.xlarge" in caught.value.allowed
    )


def test_local_zones_are_filtered_out_by_the_invoke() -> None:
    seen: list[dict[str, object]] = []

    def zones(args: dict[str, object]) -> dict[str, object]:
        seen.append(args)
        return {"names": list(ZONES), "zoneIds": ["use1-az1", "use1-az2", "use1-az4"], "id": "x"}

    run_program(
        lambda: Network("net", NetworkArgs(cluster_name="prod")),
        invokes={"aws:index/getAvailabilityZones:getAvailabilityZones": zones},
    )
    assert seen and seen[0]["filters"] == [{"name": "zone-type", "values": ["availability-zone"]}]
    assert seen[0]["state"] == "available"
