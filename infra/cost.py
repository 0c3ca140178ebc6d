"""A monthly cost estimate of a stack, from the resources its program registers and a dated price table.

Pure: it reads resources as the offline runner records them (type, name, engine-form inputs) and a
price table (``prices.json`` beside this module, or a file of the same shape that overrides it), so a
stack is priced before anything is deployed, and the arithmetic can be checked by hand. It is longer
than most modules because every priced line (nodes, pools, reservations, logs) reads its own resources.

What is counted, per month of ``hours_per_month`` hours:
- control plane: each EKS cluster's hourly fee;
- NAT: each NAT gateway's hour and each Elastic IP's public-IPv4 hour (data processed is not known);
- system nodes and the GPU on-demand baseline: on-demand groups at their desired size; with
  Karpenter, whose GPU nodes follow the pods, the on-demand pool's nodes for the GPUs of services
  that may not run on spot;
- GPU reserved: every instance a reservation (Capacity Block or ODCR) holds, paid whether used or
  not, at the given hourly price or the on-demand one;
- GPU spot at min / expected / max: the spot groups' summed min and max sizes, and in between the
  nodes the services' minimum replicas ask for (their GPUs over the nodes' GPUs); each spot node is
  priced as its group's (or NodePool's) first instance type at on-demand x (1 - the family's spot
  discount); a NodePool's maximum is its GPU limit over the GPUs of a node;
- storage: node volumes (gp3) of the nodes counted above at expected, the model store's GB
  (``model_gb``, not known from the stack) in S3 Standard, and KMS keys;
- load balancers: NLBs from LoadBalancer Services, and Route 53 health checks (fast interval extra);
- logs: what the Triton services' log level and their request fronts' request log write per request
  (measured, infra.log_volume) at
  ``requests_per_s`` (not known from the stack; split evenly over the services), ingested into
  CloudWatch Logs; Fluent Bit's Kubernetes metadata comes on top.
The spot saving compares the estimate with the same fleet run entirely on demand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import INSTANCE_TYPES
from inferstack.infra.json_input import json_object
from inferstack.infra.log_volume import (
    FRONT_LOG_BYTES_PER_REQUEST,
    FRONT_LOG_DIRECTIVE,
    bytes_per_request,
)
from inferstack.infra.registered import RegisteredResource

PRICES_FILE = Path(__file__).with_name("prices.json")
_GPU_LIMIT = "nvidia.com/gpu"
_CAPACITY_LABEL = "inferstack.io/capacity-type"
_NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
_NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


@dataclass(frozen=True)
class NodeGroupShape:
    """A node group as the estimate sees it: capacity type, instance type and sizes."""

    name: str
    spot: bool
    instance_type: str  # the first listed: what the group is sized and priced by
    min_size: int
    desired_size: int
    max_size: int
    disk_gib: int
    reserved: bool = False  # its instances are a reservation's, paid whole

    @property
    def gpus_per_node(self) -> int:
        known = INSTANCE_TYPES.get(self.instance_type)
        return known.gpus if known else 0


@dataclass(frozen=True)
class Footprint:
    """What a stack runs that costs money by the hour or the month."""

    clusters: int
    nat_gateways: int
    public_ips: int
    node_groups: tuple[NodeGroupShape, ...]
    spot_gpu_demand: int  # GPUs the services' minimum replicas may take on spot
    on_demand_gpu_demand: int  # GPUs the services' minimum replicas must have on demand
    kms_keys: int
    model_buckets: int
    load_balancers: int
    health_check_intervals: tuple[int, ...]
    # per Triton service: log bytes per request, Triton's and its request front's
    service_log_bytes: tuple[int, ...] = ()


def _int(value: Any) -> int:
    return int(float(value or 0))


def _may_run_on_spot(pod: Mapping[str, Any]) -> bool:
    terms = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for term in terms:
        for expression in term.get("matchExpressions", []):
            if expression.get("key") == _CAPACITY_LABEL and "spot" not in expression.get("values", []):
                return False
    return True


def _requirement(pool: Mapping[str, Any], key: str) -> list[str]:
    template = (pool.get("spec") or {}).get("template", {}).get("spec") or {}
    for requirement in template.get("requirements") or []:
        if requirement.get("key") == key and requirement.get("operator") == "In":
            return [str(v) for v in requirement.get("values") or []]
    return []


def _gib(size: Any) -> int:
    """An EBS size as Kubernetes spells it (``200Gi``; ``G`` and ``T`` taken alike) in GiB."""
    text = str(size or "0")
    for suffix, factor in (("Ti", 1024), ("T", 1024), ("Gi", 1), ("G", 1)):
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(float(text) / 2**30)


def _pool_shape(
    pool: RegisteredResource, disks: Mapping[str, int], on_demand_demand: int
) -> NodeGroupShape | None:
    """A NodePool as a group: nodes from zero to its GPU limit; on demand, as many as the services
    that may not run on spot ask for (Karpenter starts nodes for pending pods, and no others)."""
    types = _requirement(pool.inputs, "node.kubernetes.io/instance-type")
    known = INSTANCE_TYPES.get(types[0]) if types else None
    if known is None or not known.gpus:
        return None
    capacity = _requirement(pool.inputs, "karpenter.sh/capacity-type")
    limit = _int(((pool.inputs.get("spec") or {}).get("limits") or {}).get(_GPU_LIMIT))
    nodes = limit // known.gpus
    node_class = ((pool.inputs.get("spec") or {}).get("template", {}).get("spec") or {}).get(
        "nodeClassRef"
    ) or {}
    desired = {"reserved": nodes, "on-demand": min(nodes, math.ceil(on_demand_demand / known.gpus))}
    return NodeGroupShape(
        name=pool.name,
        spot=capacity == ["spot"],
        instance_type=types[0],
        min_size=0,
        desired_size=desired.get(capacity[0] if capacity else "", 0),
        max_size=nodes,
        disk_gib=disks.get(str(node_class.get("name")), 0),
        reserved=capacity == ["reserved"],
    )


def footprint(resources: Iterable[RegisteredResource]) -> Footprint:
    records = list(resources)
    templates = {r.urn: r.inputs for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"}
    disks = {
        urn: max(
            (_int(m.get("ebs", {}).get("volumeSize")) for m in t.get("blockDeviceMappings", [])), default=0
        )
        for urn, t in templates.items()
    }
    class_disks = {
        str((r.inputs.get("metadata") or {}).get("name")): max(
            (
                _gib(m.get("ebs", {}).get("volumeSize"))
                for m in (r.inputs.get("spec") or {}).get("blockDeviceMappings", [])
            ),
            default=0,
        )
        for r in records
        if r.type == _NODE_CLASS
    }
    groups = []
    demand = on_demand_demand = 0
    count = {t: 0 for t in ("cluster", "nat", "eip", "kms", "bucket", "lb")}
    intervals = []
    log_bytes: list[int] = []
    # The request fronts' ConfigMaps whose nginx.conf writes a line per request.
    request_logs = {
        r.inputs.get("metadata", {}).get("name")
        for r in records
        if r.type == "kubernetes:core/v1:ConfigMap"
        and FRONT_LOG_DIRECTIVE in str(r.inputs.get("data", {}).get("nginx.conf", ""))
    }
    for r in records:
        if r.type == "kubernetes:apps/v1:Deployment":
            pod = r.inputs.get("spec", {}).get("template", {}).get("spec", {})
            gpus = sum(
                _int((c.get("resources") or {}).get("limits", {}).get(_GPU_LIMIT))
                for c in pod.get("containers", [])
            )
            asked = _int(r.inputs.get("spec", {}).get("replicas", 1)) * gpus
            if gpus and _may_run_on_spot(pod):
                demand += asked
            elif gpus:
                on_demand_demand += asked
    for r in records:
        kind = {
            "aws:eks/cluster:Cluster": "cluster",
            "aws:ec2/natGateway:NatGateway": "nat",
            "aws:ec2/eip:Eip": "eip",
            "aws:kms/key:Key": "kms",
            "aws:s3/bucket:Bucket": "bucket",
        }.get(r.type)
        if kind:
            count[kind] += 1
        if r.type == "aws:eks/nodeGroup:NodeGroup":
            scaling = r.inputs.get("scalingConfig", {})
            launch = r.property_dependencies.get("launchTemplate", ())
            reservation = any(
                (templates.get(u, {}).get("capacityReservationSpecification") or {}).get(
                    "capacityReservationTarget"
                )
                for u in launch
            )
            groups.append(
                NodeGroupShape(
                    name=r.name,
                    spot=r.inputs.get("capacityType") == "SPOT",
                    instance_type=(r.inputs.get("instanceTypes") or [""])[0],
                    min_size=_int(scaling.get("minSize")),
                    desired_size=_int(scaling.get("desiredSize")),
                    max_size=_int(scaling.get("maxSize")),
                    disk_gib=max([disks.get(u, 0) for u in launch] + [_int(r.inputs.get("diskSize"))]),
                    reserved=reservation or r.inputs.get("capacityType") == "CAPACITY_BLOCK",
                )
            )
        if r.type == _NODE_POOL:
            shape = _pool_shape(r, class_disks, on_demand_demand)
            if shape is not None:
                groups.append(shape)
        if r.type == "kubernetes:apps/v1:Deployment":
            pod = r.inputs.get("spec", {}).get("template", {}).get("spec", {})
            log_bytes.extend(_service_log_bytes(pod, request_logs))
        if r.type == "kubernetes:core/v1:Service" and r.inputs.get("spec", {}).get("type") == "LoadBalancer":
            count["lb"] += 1
        if r.type == "aws:route53/healthCheck:HealthCheck":
            intervals.append(_int(r.inputs.get("requestInterval")) or 30)
    return Footprint(
        clusters=count["cluster"],
        nat_gateways=count["nat"],
        public_ips=count["eip"],
        node_groups=tuple(groups),
        spot_gpu_demand=demand,
        on_demand_gpu_demand=on_demand_demand,
        kms_keys=count["kms"],
        model_buckets=count["bucket"],
        load_balancers=count["lb"],
        health_check_intervals=tuple(intervals),
        service_log_bytes=tuple(log_bytes),
    )


def _service_log_bytes(pod: Mapping[str, Any], request_logs: set[Any]) -> list[int]:
    """The log bytes per request of a pod's Triton (its --log-verbose; Triton's default is 0), plus its
    request front's line when the front's ConfigMap (a volume of the pod) has the request log on."""
    mounted = {(v.get("configMap") or {}).get("name") for v in pod.get("volumes", [])}
    front = FRONT_LOG_BYTES_PER_REQUEST if mounted & request_logs else 0
    found = []
    for container in pod.get("containers", []):
        args = [str(a) for a in container.get("args", [])]
        if "tritonserver" in str(container.get("image", "")):
            levels = [int(a.split("=", 1)[1]) for a in args if a.startswith("--log-verbose=")]
            found.append(bytes_per_request(levels[-1] if levels else 0) + front)
    return found


@dataclass(frozen=True)
class Prices:
    """The price table (prices.json): where and when it was read, its region and currency."""

    source: str
    date: str
    region: str
    currency: str
    hours_per_month: float
    on_demand_hourly: Mapping[str, float]
    spot_discount: Mapping[str, float]
    spot_discount_source: str
    eks_cluster_hourly: float
    nat_gateway_hourly: float
    public_ipv4_hourly: float
    nlb_hourly: float
    gp3_gb_month: float
    s3_standard_gb_month: float
    kms_key_month: float
    route53_health_check_month: float
    route53_fast_interval_month: float
    cloudwatch_logs_ingest_gb: float

    def on_demand(self, instance_type: str) -> float:
        if instance_type not in self.on_demand_hourly:
            raise InvalidInput(
                "prices.on_demand_hourly",
                instance_type,
                f"a price for every instance type the stack runs (the table of {self.date} has "
                f"{', '.join(sorted(self.on_demand_hourly))}); add it with --prices FILE",
            )
        return self.on_demand_hourly[instance_type]

    def spot(self, instance_type: str) -> float:
        family = instance_type.split(".")[0]
        if family not in self.spot_discount:
            raise InvalidInput(
                "prices.spot_discount",
                family,
                f"a spot discount for every spot family the stack runs (known: "
                f"{', '.join(sorted(self.spot_discount))}); add it with --prices FILE",
            )
        return self.on_demand(instance_type) * (1 - self.spot_discount[family])


def load_prices(override: Path | None = None) -> Prices:
    """The packaged table, with ``override`` (a JSON file of the same shape, any subset) on top."""
    table: dict[str, Any] = json.loads(PRICES_FILE.read_text())
    if override is not None:
        given = json_object(
            override, "--prices", readable="JSON price table", shaped="shaped like infra/prices.json"
        )
        unknown = sorted(set(given) - set(table))
        if unknown:
            raise InvalidInput("--prices", unknown, f"keys among {', '.join(table)}")
        for key, value in given.items():
            table[key] = {**table[key], **value} if isinstance(table[key], dict) else value
    for family, discount in table["spot_discount"].items():
        if not 0 <= discount < 1:
            raise InvalidInput(f"prices.spot_discount.{family}", discount, "a fraction from 0 to below 1")
    return Prices(**table)


@dataclass(frozen=True)
class Line:
    """One line of an estimate: a group's monthly cost and how it was reached."""

    group: str
    monthly: float
    detail: str
    in_total: bool = True  # spot at min and max are alternatives to the expected line, not additions


@dataclass(frozen=True)
class Estimate:
    """A stack's monthly cost: its lines, the total, and the same fleet all on demand."""

    lines: tuple[Line, ...]
    total: float
    all_on_demand: float  # the same fleet with the expected spot nodes on demand

    @property
    def spot_saving_pct(self) -> float:
        return 100 * (self.all_on_demand - self.total) / self.all_on_demand if self.all_on_demand else 0.0


def estimate(
    fp: Footprint,
    prices: Prices,
    *,
    model_gb: float = 20.0,
    reserved_hourly: float | None = None,
    requests_per_s: float = 0.0,
) -> Estimate:
    """``reserved_hourly``: what a reserved instance costs by the hour (a Capacity Block's price);
    None: its on-demand price, which is what an ODCR costs. ``requests_per_s``: the fleet's request
    rate, which prices the Triton logs."""
    if model_gb < 0:
        raise InvalidInput("model_gb", model_gb, "a size in GB >= 0")
    if reserved_hourly is not None and reserved_hourly <= 0:
        raise InvalidInput("reserved_hourly", reserved_hourly, "a price per instance-hour > 0")
    if requests_per_s < 0:
        raise InvalidInput("requests_per_s", requests_per_s, "a request rate >= 0")
    hours = prices.hours_per_month
    reserved = [g for g in fp.node_groups if g.reserved]
    on_demand = [g for g in fp.node_groups if not g.spot and not g.reserved]
    system = [g for g in on_demand if not g.gpus_per_node]
    baseline = [g for g in on_demand if g.gpus_per_node]
    spot = [g for g in fp.node_groups if g.spot]

    def hourly(groups: list[NodeGroupShape]) -> float:
        return sum(g.desired_size * prices.on_demand(g.instance_type) for g in groups) * hours

    lines = [
        Line(
            "control plane", fp.clusters * prices.eks_cluster_hourly * hours, f"{fp.clusters} EKS cluster(s)"
        ),
        Line(
            "NAT",
            (fp.nat_gateways * prices.nat_gateway_hourly + fp.public_ips * prices.public_ipv4_hourly) * hours,
            f"{fp.nat_gateways} gateway(s), {fp.public_ips} public IPv4; data processed not included",
        ),
        Line(
            "system nodes", hourly(system), ", ".join(f"{g.desired_size} x {g.instance_type}" for g in system)
        ),
        Line(
            "GPU on-demand baseline",
            hourly(baseline),
            f"{sum(g.desired_size for g in baseline)} x {baseline[0].instance_type}" if baseline else "none",
        ),
    ]
    if reserved:
        instances = sum(g.max_size for g in reserved)
        lines.append(
            Line(
                "GPU reserved",
                sum(g.max_size * (reserved_hourly or prices.on_demand(g.instance_type)) for g in reserved)
                * hours,
                f"{instances} x {reserved[0].instance_type}, paid whether used or not",
            )
        )
    expected_spot = 0
    spot_node_on_demand = 0.0
    if spot:
        low, high = sum(g.min_size for g in spot), sum(g.max_size for g in spot)
        first = spot[0]
        per_node = math.ceil(fp.spot_gpu_demand / first.gpus_per_node) if first.gpus_per_node else 0
        expected_spot = min(max(per_node, low), high)
        price = prices.spot(first.instance_type)
        spot_node_on_demand = prices.on_demand(first.instance_type) * hours
        discount = prices.spot_discount[first.instance_type.split(".")[0]]
        for label, nodes in (("min", low), ("expected", expected_spot), ("max", high)):
            lines.append(
                Line(
                    f"GPU spot ({label})",
                    nodes * price * hours,
                    f"{nodes} x {first.instance_type} at {discount:.0%} off on-demand",
                    in_total=label == "expected",
                )
            )
    node_disks = (
        sum(g.desired_size * g.disk_gib for g in on_demand)
        + sum(g.max_size * g.disk_gib for g in reserved)
        + expected_spot * (spot[0].disk_gib if spot else 0)
    )
    lines.append(
        Line(
            "storage",
            node_disks * prices.gp3_gb_month
            + fp.model_buckets * model_gb * prices.s3_standard_gb_month
            + fp.kms_keys * prices.kms_key_month,
            f"{node_disks} GiB gp3, {fp.model_buckets} x {model_gb:g} GB S3, {fp.kms_keys} KMS key(s)",
        )
    )
    fast = sum(1 for interval in fp.health_check_intervals if interval < 30)
    lines.append(
        Line(
            "load balancers",
            fp.load_balancers * prices.nlb_hourly * hours
            + len(fp.health_check_intervals) * prices.route53_health_check_month
            + fast * prices.route53_fast_interval_month,
            f"{fp.load_balancers} NLB(s) (capacity units not included), "
            f"{len(fp.health_check_intervals)} health check(s), {fast} fast",
        )
    )
    services = len(fp.service_log_bytes)
    log_gb = (
        sum(requests_per_s / services * b * 3600 * hours / 1e9 for b in fp.service_log_bytes)
        if services
        else 0
    )
    per_request = ", ".join(f"{b} B" for b in fp.service_log_bytes) or "no Triton"
    lines.append(
        Line(
            "logs",
            log_gb * prices.cloudwatch_logs_ingest_gb,
            f"{log_gb:,.1f} GB at {requests_per_s:g} req/s ({per_request} a request, measured); "
            "Fluent Bit's metadata not included",
        )
    )
    total = sum(line.monthly for line in lines if line.in_total)
    spot_expected = next((line.monthly for line in lines if line.group == "GPU spot (expected)"), 0.0)
    return Estimate(
        lines=tuple(lines),
        total=total,
        all_on_demand=total - spot_expected + expected_spot * spot_node_on_demand,
    )
