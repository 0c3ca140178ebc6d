"""A VPC over several availability zones, laid out for EKS.

Per zone: one private subnet (nodes and pods; large, since the VPC CNI gives every pod a VPC
address) and one public subnet (load balancers and NAT gateways; small). Private subnets route to
the internet through a NAT gateway in their own zone (``per_zone``: a zone outage takes out only
its own egress), through one shared gateway (``single``: cheaper, for dev), or not at all (``none``).
An S3 gateway endpoint on every private route table keeps S3 traffic (Triton's model pulls, ECR's
image layers) off the NAT gateways, which charge per GB processed; the gateway endpoint is free.
Nothing waits for it: until it exists (seconds after the route tables), S3 traffic takes the NAT.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws

from inferstack.infra.errors import InvalidInput
from inferstack.infra.zones import Zone, check_zones, choose_zones

NatMode = Literal["per_zone", "single", "none"]
Tier = Literal["private", "public"]


@dataclass(frozen=True)
class SubnetPlan:
    """One planned subnet: its zone, tier (public or private) and CIDR."""

    zone: str
    tier: Tier
    cidr: str


def plan_subnets(
    vpc_cidr: str, zones: Sequence[str], *, private_prefix: int, public_prefix: int
) -> list[SubnetPlan]:
    """Non-overlapping subnets inside ``vpc_cidr``: every private subnet, then every public one.

    Larger blocks first keeps every block aligned, so the only way to fail is a VPC too small.
    """
    try:
        vpc = ipaddress.IPv4Network(vpc_cidr)
    except ValueError:
        raise InvalidInput(
            "vpc_cidr", vpc_cidr, "an IPv4 network such as 10.0.0.0/16 (host bits zero)"
        ) from None
    if not 16 <= vpc.prefixlen <= 24:
        raise InvalidInput(
            "vpc_cidr", vpc_cidr, "a prefix length from /16 to /24 (room for the subnets EKS needs)"
        )
    check_zones(zones)
    for name, prefix in (("private_prefix", private_prefix), ("public_prefix", public_prefix)):
        if not vpc.prefixlen < prefix <= 28:
            raise InvalidInput(
                name, prefix, f"a prefix length from /{vpc.prefixlen + 1} to /28 inside {vpc_cidr}"
            )
    needed = len(zones) * (2 ** (32 - private_prefix) + 2 ** (32 - public_prefix))
    if needed > vpc.num_addresses:
        raise InvalidInput(
            "vpc_cidr",
            vpc_cidr,
            f"room for {len(zones)} x (/{private_prefix} + /{public_prefix}) = {needed} addresses; "
            f"it has {vpc.num_addresses}: use a larger VPC or smaller subnets",
        )
    plans: list[SubnetPlan] = []
    cursor = int(vpc.network_address)
    # Larger blocks first: each block then starts on a multiple of its own size (aligned).
    tiers: list[tuple[Tier, int]] = [("private", private_prefix), ("public", public_prefix)]
    for tier, prefix in sorted(tiers, key=lambda t: t[1]):
        for zone in zones:
            plans.append(SubnetPlan(zone, tier, str(ipaddress.IPv4Network((cursor, prefix)))))
            cursor += 2 ** (32 - prefix)
    return sorted(plans, key=lambda p: p.tier != "private")


# What a node in a subnet without a NAT route needs to join the cluster and pull images from ECR.
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "ec2", "logs", "eks-auth")


def check_egress(nat: NatMode, vpc_endpoints: bool) -> None:
    """Private nodes need a way out: a NAT gateway, or the endpoints of what they call to join."""
    if nat == "none" and not vpc_endpoints:
        raise InvalidInput(
            "nat",
            nat,
            "per_zone or single, or none together with vpc_endpoints (nodes without a NAT route reach "
            f"ECR, S3, {', '.join(INTERFACE_ENDPOINTS[2:])} only through VPC endpoints)",
        )


def subnet_tags(cluster_name: str, tier: Tier, zone: str) -> dict[str, str]:
    """Tags the AWS load balancer controller and EKS look for when they pick subnets."""
    role = "kubernetes.io/role/internal-elb" if tier == "private" else "kubernetes.io/role/elb"
    return {
        "Name": f"{cluster_name}-{tier}-{zone}",
        role: "1",
        f"kubernetes.io/cluster/{cluster_name}": "shared",
        "inferstack.io/tier": tier,
    }


def nat_zones(zones: Sequence[str], nat: NatMode) -> list[str]:
    """The zones that get a NAT gateway."""
    if nat not in ("per_zone", "single", "none"):
        raise InvalidInput("nat", nat, "per_zone, single or none")
    return {"per_zone": list(zones), "single": list(zones[:1]), "none": []}[nat]


@dataclass
class NetworkArgs:
    """What the VPC is given: its range, its zones (or how many), NAT mode, subnet sizes, endpoints."""

    cluster_name: str
    vpc_cidr: str = "10.0.0.0/16"
    zones: Sequence[str] | None = None  # None: the first ``zone_count`` available zones of the region
    zone_count: int = 3
    nat: NatMode = "per_zone"
    private_prefix: int = 19
    public_prefix: int = 24
    # Interface endpoints (ECR, STS, EC2, CloudWatch Logs, EKS Auth): required with nat="none"; with a
    # NAT they keep AWS calls off the NAT's data charges (the S3 gateway endpoint is always there).
    vpc_endpoints: bool = False
    tags: dict[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    """The VPC over several zones: public and private subnets per zone, NAT (per zone or one), routes,
    optional VPC endpoints, and the tags EKS and its load balancers look for."""

    vpc_id: pulumi.Output[str]
    zones: list[str]
    private_subnet_ids: list[pulumi.Output[str]]  # in zone order
    public_subnet_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        zones = list(args.zones) if args.zones is not None else _available_zones(args.zone_count)
        plans = plan_subnets(
            args.vpc_cidr, zones, private_prefix=args.private_prefix, public_prefix=args.public_prefix
        )
        with_nat = nat_zones(zones, args.nat)
        check_egress(args.nat, args.vpc_endpoints)
        super().__init__("inferstack:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"inferstack.io/cluster": args.cluster_name, **args.tags}

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,  # EKS nodes register by their private DNS names
            enable_dns_support=True,
            tags={**tags, "Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        subnets = {
            (p.tier, p.zone): aws.ec2.Subnet(
                f"{name}-{p.tier}-{p.zone}",
                vpc_id=vpc.id,
                cidr_block=p.cidr,
                availability_zone=p.zone,
                map_public_ip_on_launch=False,  # nothing launched here gets a public address by default
                tags={**tags, **subnet_tags(args.cluster_name, p.tier, p.zone)},
                opts=child,
            )
            for p in plans
        }
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={**tags, "Name": f"{args.cluster_name}-public"},
            opts=child,
        )
        nats = {}
        private_tables = []
        for zone in zones:
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}",
                subnet_id=subnets[("public", zone)].id,
                route_table_id=public_routes.id,
                opts=child,
            )
        for zone in with_nat:
            address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags, opts=child)
            nats[zone] = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                allocation_id=address.id,
                subnet_id=subnets[("public", zone)].id,
                tags={**tags, "Name": f"{args.cluster_name}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
        for zone in zones:
            nat = nats.get(zone) or (next(iter(nats.values())) if nats else None)
            routes = (
                [aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)] if nat else []
            )
            table = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                routes=routes,
                tags={**tags, "Name": f"{args.cluster_name}-private-{zone}"},
                opts=child,
            )
            private_tables.append(table)
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}",
                subnet_id=subnets[("private", zone)].id,
                route_table_id=table.id,
                opts=child,
            )

        region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in private_tables],
            tags=tags,
            opts=child,
        )
        if args.vpc_endpoints:
            self._endpoints(name, args, vpc, [subnets[("private", z)] for z in zones], region, tags)

        self.vpc_id = vpc.id
        self.zones = zones
        self.private_subnet_ids = [subnets[("private", z)].id for z in zones]
        self.public_subnet_ids = [subnets[("public", z)].id for z in zones]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "zones": zones,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
            }
        )

    def _endpoints(
        self,
        name: str,
        args: NetworkArgs,
        vpc: aws.ec2.Vpc,
        subnets: Sequence[aws.ec2.Subnet],
        region: str,
        tags: dict[str, str],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        https_from_vpc = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=vpc.id,
            description="HTTPS from the VPC to its AWS service endpoints",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.vpc_cidr]
                )
            ],
            tags=tags,
            opts=child,
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in subnets],
                security_group_ids=[https_from_vpc.id],
                tags=tags,
                opts=child,
            )


def region_zones(opts: pulumi.InvokeOptions | None = None) -> list[Zone]:
    """The region's availability zones that are up; Local and Wavelength Zones are not for EKS nodes."""
    found = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="zone-type", values=["availability-zone"])],
        opts=opts,
    )
    return [Zone(name, zone_id) for name, zone_id in zip(found.names, found.zone_ids, strict=True)]


def instance_type_offerings(
    instance_types: Sequence[str], opts: pulumi.InvokeOptions | None = None
) -> dict[str, set[str]]:
    """Instance type -> the zones of the region that offer it."""
    if not instance_types:
        return {}
    found = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[
            aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=list(instance_types))
        ],
        opts=opts,
    )
    offered: dict[str, set[str]] = {t: set() for t in instance_types}
    for instance_type, location in zip(found.instance_types, found.locations, strict=True):
        offered.setdefault(instance_type, set()).add(location)
    return offered


def _available_zones(count: int) -> list[str]:
    return choose_zones("zone_count", count, region_zones(), {})
