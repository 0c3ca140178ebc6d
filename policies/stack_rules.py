"""The stack rules of inferstack's policy pack: checks no single resource can answer.

Each takes every resource of the stack (engine-form properties as plain data, and the URNs each one
is ordered after) and the rule's config, and returns ``(message, urn)`` violations; an empty URN
blames the stack as a whole. Pure: the pack adapts pulumi-policy's ``PolicyResource`` to
``StackResource``, and the tests send the same resources through the real Analyzer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferstack.infra.interruptions import INTERRUPTION_EVENTS
from inferstack.policies.awaits import await_covers_wait
from inferstack.policies.pod_references import pods_wait_for_references
from inferstack.policies.rules import (
    CLUSTER,
    DEPLOYMENT,
    NODE_GROUP,
    NODE_POOL,
    QUEUE,
    Config,
    RuleBase,
    containers,
    gpus_of,
    gpus_per_node,
    is_triton,
    listed,
    namespace_of,
    pod_spec,
    pool_gpu_limit,
    pool_gpus_per_node,
    pool_requirement,
    statements,
)
from inferstack.policies.scale_from_zero import node_template_fits, reachable_groups

ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
SUBNET = "aws:ec2/subnet:Subnet"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ROLE = "aws:iam/role:Role"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ROLE_POLICIES = ("aws:iam/rolePolicy:RolePolicy",)
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Which chart installs the CRDs of an API group: a custom resource must be ordered after that release.
CRD_CHARTS = {
    "monitoring.coreos.com": "kube-prometheus-stack",
    "keda.sh": "keda",
    "karpenter.sh": "karpenter-crd",
    "karpenter.k8s.aws": "karpenter-crd",
}

Violation = tuple[str, str]  # (message, urn or "" for the stack)


@dataclass(frozen=True)
class StackResource:
    """A resource as a stack policy sees it: type, name, properties and what it is ordered after."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    # Every URN the engine orders this after: dependsOn plus the resources its inputs come from.
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The customTimeouts option in seconds by operation (create, update, delete); absent: unset.
    custom_timeouts: Mapping[str, float] = field(default_factory=dict)
    provider: str = ""  # the URN of its explicit provider ("" for the default one): which cluster


class Stack:
    """The resources of one stack, with the lookups the rules share."""

    def __init__(self, resources: Iterable[StackResource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, *types: str) -> list[StackResource]:
        return [r for r in self.resources if r.type in types]

    def after(self, resource: StackResource) -> set[str]:
        """Every URN ``resource`` waits for, directly or transitively."""
        seen: set[str] = set()
        pending = [resource]
        while pending:
            for urn in pending.pop().dependencies:
                if urn not in seen:
                    seen.add(urn)
                    if urn in self.by_urn:
                        pending.append(self.by_urn[urn])
        return seen

    def input_sources(self, resource: StackResource, key: str) -> list[StackResource]:
        return [self.by_urn[u] for u in resource.property_dependencies.get(key, ()) if u in self.by_urn]

    def zones_of(self, node_group: StackResource) -> tuple[str, ...]:
        """The zones of a node group's subnets (through the engine's property dependencies), or the
        zones a NodePool's requirement allows."""
        if node_group.type == NODE_POOL:
            return tuple(sorted(pool_requirement(node_group.props, ZONE_LABEL) or []))
        subnets = self.input_sources(node_group, "subnetIds")
        return tuple(sorted({str(s.props.get("availabilityZone")) for s in subnets if s.type == SUBNET}))

    def gpu_groups(self) -> list[tuple[StackResource, float, tuple[str, ...]]]:
        """(node group or NodePool, GPUs at its maximum, zones) for the GPU capacity the stack can move.

        A group reaches max size x GPUs per node; a NodePool its GPU limit (unbounded: infinite),
        in the zones its requirement allows. Reserved capacity is not counted on: a reservation sits in
        one zone and a Capacity Block ends, so the rest of the fleet must stand without it.
        """
        groups: list[tuple[StackResource, float, tuple[str, ...]]] = []
        for group in self.of_type(NODE_GROUP):
            gpus = gpus_per_node(list(group.props.get("instanceTypes") or []))
            if gpus and not self._reserved(group):
                max_size = float((group.props.get("scalingConfig") or {}).get("maxSize", 0))
                groups.append((group, max_size * gpus, self.zones_of(group)))
        for pool in self.of_type(NODE_POOL):
            if pool_gpus_per_node(pool.props) and not self._reserved(pool):
                limit = pool_gpu_limit(pool.props)
                groups.append((pool, float("inf") if limit is None else limit, self.zones_of(pool)))
        return groups

    def _reserved(self, capacity: StackResource) -> bool:
        if capacity.type == NODE_POOL:
            return pool_requirement(capacity.props, "karpenter.sh/capacity-type") == ["reserved"]
        templates = self.input_sources(capacity, "launchTemplate")
        return capacity.props.get("capacityType") == "CAPACITY_BLOCK" or any(
            (t.props.get("capacityReservationSpecification") or {}).get("capacityReservationTarget")
            for t in templates
        )

    def gpu_capacity_by_zone(self) -> dict[str, float]:
        """GPUs each zone reaches at every group's maximum (multi-zone groups and pools split evenly),
        counting only the node groups the autoscaler can start from zero for a pod of this stack
        (NodePools: Karpenter builds its nodes from instance types, not from a template)."""
        capacity: dict[str, float] = {}
        reachable = reachable_groups(self)
        for group, gpus, zones in self.gpu_groups():
            if group.type == NODE_GROUP and group.urn not in reachable:
                continue
            for zone in zones or ("(unknown zone)",):
                capacity[zone] = capacity.get(zone, 0.0) + gpus / max(len(zones), 1)
        return capacity

    def gpu_zones(self) -> set[str]:
        return {zone for _, _, zones in self.gpu_groups() for zone in zones}

    def tritons(self) -> list[StackResource]:
        return [d for d in self.of_type(DEPLOYMENT) if any(is_triton(c) for c in containers(d.props))]

    def scaled_object_for(self, deployment: StackResource) -> StackResource | None:
        namespace, name = _namespace(deployment), deployment.props.get("metadata", {}).get("name")
        for scaler in self.of_type(SCALED_OBJECT):
            target = (scaler.props.get("spec") or {}).get("scaleTargetRef") or {}
            if (
                _namespace(scaler) == namespace
                and target.get("name") == name
                and target.get("kind", "Deployment") == "Deployment"
            ):
                return scaler
        return None


def _namespace(resource: StackResource) -> str:
    return namespace_of(resource.props)


def _label(resource: StackResource) -> str:
    return f"{resource.type.rsplit(':', 1)[-1]} {resource.name}"


def _replicas(stack: Stack, deployment: StackResource) -> tuple[int, int]:
    """(minimum, maximum) replicas: the ScaledObject's bounds when KEDA scales it, else spec.replicas."""
    scaler = stack.scaled_object_for(deployment)
    if scaler is not None:
        spec = scaler.props.get("spec") or {}
        return int(float(spec.get("minReplicaCount", 0))), int(float(spec.get("maxReplicaCount", 100)))
    replicas = int(float((deployment.props.get("spec") or {}).get("replicas", 1)))
    return replicas, replicas


# --- deployable -------------------------------------------------------------------------------------


def _is_kubernetes(resource: StackResource) -> bool:
    return resource.type.startswith("kubernetes:") or resource.type == "pulumi:providers:kubernetes"


def deployable(stack: Stack, config: Config) -> list[Violation]:
    """`pulumi up` can reach and administer the cluster it then deploys Kubernetes resources into."""
    if not any(_is_kubernetes(r) for r in stack.resources):
        return []
    problems: list[Violation] = []
    for cluster in stack.of_type(CLUSTER):
        vpc = cluster.props.get("vpcConfig") or {}
        if str(vpc.get("endpointPublicAccess", True)).lower() != "true":
            problems.append(
                (
                    "the API endpoint is private only, yet this stack deploys Kubernetes resources from "
                    "where `pulumi up` runs, outside the VPC: every one would time out "
                    "(open the public endpoint to the deployer's CIDRs, vpcConfig.publicAccessCidrs)",
                    cluster.urn,
                )
            )
        elif not vpc.get("publicAccessCidrs"):
            problems.append(
                (
                    "the public API endpoint names no CIDRs (vpcConfig.publicAccessCidrs): "
                    "list where `pulumi up` runs from",
                    cluster.urn,
                )
            )
        problems += _deployer_is_admin(stack, cluster)
    return problems


def _deployer_is_admin(stack: Stack, cluster: StackResource) -> list[Violation]:
    access = cluster.props.get("accessConfig") or {}
    # The provider's default is true: the creator (the identity running pulumi) is an admin.
    if str(access.get("bootstrapClusterCreatorAdminPermissions", True)).lower() == "true":
        return []
    entries = {
        str(e.props.get("principalArn")) for e in stack.of_type(ACCESS_ENTRY) if cluster.urn in stack.after(e)
    }
    admins = [
        a
        for a in stack.of_type(ACCESS_POLICY_ASSOCIATION)
        if str(a.props.get("policyArn", "")).endswith(CLUSTER_ADMIN_POLICY)
        and (a.props.get("accessScope") or {}).get("type") == "cluster"
        and str(a.props.get("principalArn")) in entries
        and cluster.urn in stack.after(a)
    ]
    if not admins:
        return [
            (
                "no identity can administer the cluster: bootstrapClusterCreatorAdminPermissions is false "
                f"and no access entry has {CLUSTER_ADMIN_POLICY} at cluster scope, so every Kubernetes "
                "call from `pulumi up` is refused",
                cluster.urn,
            )
        ]
    admin_urns = {a.urn for a in admins}
    return [
        (
            f"Kubernetes provider {provider.name} does not wait for the cluster-admin access policy "
            "association: its first calls can be refused",
            provider.urn,
        )
        for provider in stack.of_type("pulumi:providers:kubernetes")
        if cluster.urn in stack.after(provider) and not admin_urns & stack.after(provider)
    ]


# --- ordered ----------------------------------------------------------------------------------------


def chart_name(chart: Any) -> str:
    """A release's chart by name: ``oci://registry/path/name`` is ``name``."""
    return str(chart or "").rsplit("/", 1)[-1]


def _api_group(resource_type: str) -> str:
    """``kubernetes:keda.sh/v1alpha1:ScaledObject`` -> ``keda.sh`` (``""`` for the core group)."""
    group_version = resource_type.removeprefix("kubernetes:").split(":")[0]
    return group_version.split("/")[0] if "/" in group_version else ""


def crd_ordered(stack: Stack, config: Config) -> list[Violation]:
    """A custom resource is created after the release (or CRD) that defines its kind."""
    problems: list[Violation] = []
    for resource in stack.resources:
        if not resource.type.startswith("kubernetes:"):
            continue
        group = _api_group(resource.type)
        defined_by = [
            r.urn
            for r in stack.of_type(*RELEASE_TYPES)
            if group in CRD_CHARTS and chart_name(r.props.get("chart")) == CRD_CHARTS[group]
        ] + [c.urn for c in stack.of_type(CRD) if (c.props.get("spec") or {}).get("group") == group]
        if group not in CRD_CHARTS and not defined_by:
            continue  # a built-in kind, or one whose CRD this stack does not manage
        if not defined_by:
            problems.append(
                (f"{_label(resource)}: no release in this stack installs the CRDs of {group}", resource.urn)
            )
        elif not set(defined_by) & stack.after(resource):
            chart = CRD_CHARTS.get(group, "its CustomResourceDefinition")
            problems.append(
                (
                    f"{_label(resource)} ({group}) is not ordered after {chart}, which installs its CRD: "
                    "a first `pulumi up` creates it before its kind exists",
                    resource.urn,
                )
            )
    return problems


# --- capacity and zones -----------------------------------------------------------------------------


def gpu_capacity(stack: Stack, config: Config) -> list[Violation]:
    """Every service's minimum fits GPU capacity with the largest zone lost; every maximum fits it all."""
    demand_min = demand_max = 0.0
    services = 0
    for deployment in stack.of_type(DEPLOYMENT):
        per_replica = sum(gpus_of(c) for c in pod_spec(deployment.props).get("containers") or [])
        if per_replica:
            low, high = _replicas(stack, deployment)
            demand_min += low * per_replica
            demand_max += high * per_replica
            services += 1
    if not services:
        return []
    capacity = stack.gpu_capacity_by_zone()
    if not capacity:
        return [
            (
                f"{services} GPU service(s) need {demand_min:g} GPUs, but the stack has no GPU NodePool, nor "
                "node group the autoscaler can start from zero for them (see node-template-fits)",
                "",
            )
        ]
    total = sum(capacity.values())
    worst_zone, worst = max(sorted(capacity.items()), key=lambda item: item[1])
    problems: list[Violation] = []
    if demand_min > total - worst:
        problems.append(
            (
                f"{services} GPU service(s) need {demand_min:g} GPUs at their minimum replicas, but losing "
                f"{worst_zone} ({worst:g} GPUs) leaves {total - worst:g} of the node groups' {total:g} "
                "at maximum size",
                "",
            )
        )
    if demand_max > total:
        problems.append(
            (
                f"{services} GPU service(s) scale to {demand_max:g} GPUs at their maximum replicas, but the "
                f"GPU node groups reach only {total:g}",
                "",
            )
        )
    return problems


def zone_loss(stack: Stack, config: Config) -> list[Violation]:
    """Losing any one zone keeps a share of GPU capacity, and Triton pods are spread over zones."""
    problems: list[Violation] = []
    capacity = stack.gpu_capacity_by_zone()
    total = sum(capacity.values())
    minimum = float(config["minSurvivingShare"])
    if capacity and len([z for z, c in capacity.items() if c > 0]) < 2:
        problems.append((f"all GPU capacity is in {sorted(capacity)}: one zone down stops serving", ""))
    elif total:
        for zone, in_zone in sorted(capacity.items()):
            share = (total - in_zone) / total
            if share < minimum:
                problems.append((f"losing {zone} leaves {share:.2f} of GPU capacity, below {minimum:g}", ""))
    for deployment in stack.tritons():
        spreads = pod_spec(deployment.props).get("topologySpreadConstraints") or []
        if not any(s.get("topologyKey") == ZONE_LABEL for s in spreads):
            problems.append(
                (f"{_label(deployment)} does not spread its pods over zones ({ZONE_LABEL})", deployment.urn)
            )
        problems += [(f"{_label(deployment)}: {p}", deployment.urn) for p in _zone_loss_caps(spreads)]
    return problems


def _zone_loss_caps(spreads: list[dict[str, Any]]) -> list[str]:
    """A hard zone spread that would hold the surviving zones to the lost zone's count (see
    components/topology_spread.py for the scheduler's rule)."""
    problems = []
    for spread in spreads:
        if spread.get("topologyKey") != ZONE_LABEL or spread.get("whenUnsatisfiable") != "DoNotSchedule":
            continue
        if int(spread.get("minDomains") or 1) > 1:
            problems.append(
                f"zone spread sets minDomains {spread['minDomains']}: with a zone lost the scheduler takes "
                "the global minimum as 0 and the surviving zones hold one replica each; leave it unset"
            )
        if spread.get("nodeTaintsPolicy", "Ignore") != "Honor":
            problems.append(
                "zone spread does not set nodeTaintsPolicy: Honor: a cordoned or unreachable zone "
                "still counts, empty, and caps the others at maxSkew replicas"
            )
    return problems


def zones(stack: Stack, config: Config) -> list[Violation]:
    """Nodes span at least the configured number of zones (2; 3 in prod)."""
    capacity = stack.of_type(NODE_GROUP, NODE_POOL)
    spanned = {z for group in capacity for z in stack.zones_of(group)}
    minimum = int(config["minimum"])
    if capacity and len(spanned) < minimum:
        return [(f"node groups span {len(spanned)} zone(s) {sorted(spanned)}; at least {minimum}", "")]
    return []


def scaled_object_covers_zones(stack: Stack, config: Config) -> list[Violation]:
    """A service's minimum keeps a replica in every GPU zone, so a zone loss is not an outage."""
    count = len(stack.gpu_zones())
    problems = []
    for scaler in stack.of_type(SCALED_OBJECT):
        minimum = float((scaler.props.get("spec") or {}).get("minReplicaCount", 0))
        if minimum < count:
            problems.append(
                (f"{_label(scaler)}: minReplicaCount {minimum:g} is below the {count} GPU zones", scaler.urn)
            )
    return problems


def model_service_complete(stack: Stack, config: Config) -> list[Violation]:
    """Every Triton Deployment has a PodDisruptionBudget selecting its pods and a ScaledObject."""
    problems: list[Violation] = []
    for deployment in stack.tritons():
        labels = _template_metadata(deployment).get("labels") or {}
        budgets = [
            p
            for p in stack.of_type(PDB)
            if _namespace(p) == _namespace(deployment)
            and _selects((p.props.get("spec") or {}).get("selector") or {}, labels)
        ]
        if not budgets:
            problems.append((f"{_label(deployment)} has no PodDisruptionBudget", deployment.urn))
        if stack.scaled_object_for(deployment) is None:
            problems.append((f"{_label(deployment)} has no ScaledObject", deployment.urn))
    return problems


def _template_metadata(deployment: StackResource) -> Mapping[str, Any]:
    metadata: Mapping[str, Any] = ((deployment.props.get("spec") or {}).get("template") or {}).get(
        "metadata"
    ) or {}
    return metadata


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# --- interruptions ---------------------------------------------------------------------------------


def _event_pattern(text: Any) -> Mapping[str, Any]:
    try:
        pattern = json.loads(str(text or "{}"))
    except json.JSONDecodeError:
        return {}
    return pattern if isinstance(pattern, Mapping) else {}


def karpenter_interruptions(stack: Stack, config: Config) -> list[Violation]:
    """Karpenter reads an interruption queue of this stack that every documented event reaches."""
    problems: list[Violation] = []
    for controller in stack.of_type(*RELEASE_TYPES):
        if chart_name(controller.props.get("chart")) != "karpenter":
            continue
        settings = ((controller.props.get("values") or {}).get("settings")) or {}
        name = settings.get("interruptionQueue")
        if not name:
            problems.append(
                (
                    f"{_label(controller)} has no interruption queue (settings.interruptionQueue): spot "
                    "reclaims and scheduled events take its nodes without a drain",
                    controller.urn,
                )
            )
            continue
        queues = [q for q in stack.of_type(QUEUE) if q.props.get("name") == name]
        if not queues:
            problems.append(
                (
                    f"{_label(controller)} reads queue {name!r}, which this stack does not create",
                    controller.urn,
                )
            )
            continue
        delivered = set()
        for target in stack.of_type(EVENT_TARGET):
            if {q.urn for q in queues} & set(target.property_dependencies.get("arn", ())):
                for rule in stack.input_sources(target, "rule"):
                    pattern = _event_pattern(rule.props.get("eventPattern"))
                    delivered |= {
                        (s, d) for s in pattern.get("source", []) for d in pattern.get("detail-type", [])
                    }
        missing = [f"{s}: {d}" for _, s, d in INTERRUPTION_EVENTS if (s, d) not in delivered]
        if missing:
            problems.append((f"queue {name!r} does not receive {missing}", controller.urn))
    return problems


# --- S3 and IAM -------------------------------------------------------------------------------------


def _guarding(stack: Stack, guard_type: str, bucket: StackResource) -> list[StackResource]:
    return [g for g in stack.of_type(guard_type) if bucket in stack.input_sources(g, "bucket")]


def s3_public_access_blocked(stack: Stack, config: Config) -> list[Violation]:
    """Every bucket has a public access block, with all four of its switches on."""
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    problems: list[Violation] = [
        (f"{_label(block)} leaves {off} off", block.urn)
        for block in stack.of_type(PUBLIC_ACCESS_BLOCK)
        if (off := [f for f in flags if str(block.props.get(f)).lower() != "true"])
    ]
    problems += [
        (f"{_label(bucket)} has no public access block", bucket.urn)
        for bucket in stack.of_type(*BUCKETS)
        if not _guarding(stack, PUBLIC_ACCESS_BLOCK, bucket)
    ]
    return problems


def _denies_insecure_transport(statement: Mapping[str, Any]) -> bool:
    condition = (statement.get("Condition") or {}).get("Bool") or {}
    return (
        statement.get("Effect") == "Deny"
        and any(a in ("s3:*", "*") for a in listed(statement.get("Action")))
        and str(condition.get("aws:SecureTransport")).lower() == "false"
        and any(r.endswith("/*") for r in listed(statement.get("Resource")))
        and any(not r.endswith("/*") for r in listed(statement.get("Resource")))
    )


def s3_tls_only(stack: Stack, config: Config) -> list[Violation]:
    """Every bucket's policy denies any request not made over TLS, on the bucket and its objects."""
    problems: list[Violation] = []
    for bucket in stack.of_type(*BUCKETS):
        policies = _guarding(stack, BUCKET_POLICY, bucket)
        if not any(
            _denies_insecure_transport(s) for p in policies for s in statements(p.props.get("policy"))
        ):
            problems.append(
                (f"{_label(bucket)} accepts requests without TLS (no aws:SecureTransport deny)", bucket.urn)
            )
    return problems


def _is_irsa(role: StackResource) -> bool:
    return any(
        "AssumeRoleWithWebIdentity" in str(s.get("Action")) and "Federated" in (s.get("Principal") or {})
        for s in statements(role.props.get("assumeRolePolicy"))
    )


def _object_scope_problem(resource: str) -> str | None:
    bucket_and_key = resource.split(":::", 1)[-1] if ":::" in resource else resource.rsplit(":", 1)[-1]
    bucket, _, key = bucket_and_key.partition("/")
    prefix = key.removesuffix("/*")
    if not key.endswith("/*") or not prefix or "*" in prefix or "?" in prefix or "*" in bucket:
        return f"{resource!r} is not one bucket's single prefix ('<bucket>/<prefix>/*')"
    return None


def irsa_one_prefix(stack: Stack, config: Config) -> list[Violation]:
    """A service's IRSA role reads S3 objects under one prefix of one bucket, and lists only that bucket."""
    problems: list[Violation] = []
    for role in stack.of_type(ROLE):
        if not _is_irsa(role):
            continue
        attached = [
            r
            for r in stack.of_type(*ROLE_POLICIES, ROLE_POLICY_ATTACHMENT)
            if role in stack.input_sources(r, "role")
        ]
        for item in attached:
            if item.type == ROLE_POLICY_ATTACHMENT:
                if "S3" in str(item.props.get("policyArn", "")):
                    problems.append(
                        (f"IRSA role {role.name} has the managed {item.props.get('policyArn')}", role.urn)
                    )
                continue
            problems += [(f"IRSA role {role.name}: {p}", role.urn) for p in _s3_grant_problems(item)]
    return problems


def _s3_grant_problems(policy: StackResource) -> list[str]:
    problems: list[str] = []
    prefixes: set[str] = set()
    for statement in statements(policy.props.get("policy")):
        actions = listed(statement.get("Action"))
        if statement.get("Effect") != "Allow" or not any(a.startswith(("s3:", "*")) for a in actions):
            continue
        resources = listed(statement.get("Resource"))
        if any(a in ("*", "s3:*") for a in actions):
            problems.append(f"{policy.name} allows {actions} (every S3 action)")
        elif actions == ["s3:ListBucket"]:
            # Key names of one bucket: Triton's HeadBucket is authorized as an unprefixed ListBucket,
            # so a prefix condition is optional here; the objects are what stays within the prefix.
            if len(resources) != 1 or "*" in resources[0] or "/" in resources[0].split(":::")[-1]:
                problems.append(f"{policy.name} lists {resources}, not one bucket")
        else:
            for resource in resources:
                problem = _object_scope_problem(resource)
                if problem:
                    problems.append(f"{policy.name}: {problem}")
                else:
                    prefixes.add(resource.split("/", 1)[1].removesuffix("/*"))
    if len(prefixes) > 1:
        problems.append(f"{policy.name} reaches {len(prefixes)} prefixes {sorted(prefixes)}")
    return problems


@dataclass(frozen=True)
class StackRule(RuleBase):
    """A policy on the whole stack."""

    check: Callable[[Stack, Config], list[Violation]]


STACK_RULES: Sequence[StackRule] = (
    StackRule(
        "deployable",
        "`pulumi up` reaches the API endpoint and is a cluster admin.",
        "mandatory",
        deployable,
    ),
    StackRule(
        "crd-ordered",
        "Custom resources wait for the release that installs their CRD.",
        "mandatory",
        crd_ordered,
    ),
    StackRule(
        "gpu-capacity",
        "GPU services fit GPU node capacity, also with a zone lost.",
        "mandatory",
        gpu_capacity,
    ),
    StackRule(
        "zone-loss",
        "Serving survives the loss of any one zone.",
        "mandatory",
        zone_loss,
        config_schema={"minSurvivingShare": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}},
    ),
    StackRule(
        "await-covers-wait",
        "Every resource Pulumi waits on has a timeout that covers what it waits for.",
        "mandatory",
        await_covers_wait,
    ),
    StackRule(
        "pods-wait-for-references",
        "Workloads are ordered after the ServiceAccounts, ConfigMaps and Secrets their pods name.",
        "mandatory",
        pods_wait_for_references,
    ),
    StackRule(
        "node-template-fits",
        "Every pod that may land on a GPU group fits its scale-from-zero template node with the DaemonSets.",
        "mandatory",
        node_template_fits,
    ),
    StackRule(
        "zones",
        "Nodes span enough zones.",
        "mandatory",
        zones,
        config_schema={"minimum": {"type": "integer", "minimum": 1, "default": 2}},
    ),
    StackRule(
        "scaled-object-covers-zones",
        "Each service's minimum replicas cover every GPU zone.",
        "disabled",
        scaled_object_covers_zones,
    ),
    StackRule(
        "model-service-complete",
        "Every Triton service has a PodDisruptionBudget and a ScaledObject.",
        "mandatory",
        model_service_complete,
    ),
    StackRule(
        "karpenter-interruptions",
        "Karpenter reads an interruption queue that every documented event reaches.",
        "mandatory",
        karpenter_interruptions,
    ),
    StackRule(
        "s3-public-access-blocked",
        "Every bucket blocks every form of public access.",
        "mandatory",
        s3_public_access_blocked,
    ),
    StackRule("s3-tls-only", "Every bucket refuses requests without TLS.", "mandatory", s3_tls_only),
    StackRule(
        "irsa-one-prefix",
        "IRSA roles read one prefix of one bucket.",
        "mandatory",
        irsa_one_prefix,
    ),
)
