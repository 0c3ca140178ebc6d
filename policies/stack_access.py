"""Stack rules on reaching and trusting the stack: deployable from outside the VPC, custom resources after
their CRDs, buckets private and TLS-only, IRSA roles reading one prefix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferstack.policies.rule_base import (
    CLUSTER,
    Config,
    listed,
    statements,
)
from inferstack.policies.stack import (
    ACCESS_ENTRY,
    ACCESS_POLICY_ASSOCIATION,
    BUCKET_POLICY,
    BUCKETS,
    CLUSTER_ADMIN_POLICY,
    CRD,
    CRD_CHARTS,
    PUBLIC_ACCESS_BLOCK,
    RELEASE_TYPES,
    ROLE,
    ROLE_POLICIES,
    ROLE_POLICY_ATTACHMENT,
    Stack,
    StackResource,
    Violation,
    resource_label,
)

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
                (
                    f"{resource_label(resource)}: no release in this stack installs the CRDs of {group}",
                    resource.urn,
                )
            )
        elif not set(defined_by) & stack.after(resource):
            chart = CRD_CHARTS.get(group, "its CustomResourceDefinition")
            problems.append(
                (
                    f"{resource_label(resource)} ({group}) is not ordered after {chart}, "
                    "which installs its CRD: "
                    "a first `pulumi up` creates it before its kind exists",
                    resource.urn,
                )
            )
    return problems


# --- S3 and IAM -------------------------------------------------------------------------------------


def _guarding(stack: Stack, guard_type: str, bucket: StackResource) -> list[StackResource]:
    return [g for g in stack.of_type(guard_type) if bucket in stack.input_sources(g, "bucket")]


def s3_public_access_blocked(stack: Stack, config: Config) -> list[Violation]:
    """Every bucket has a public access block, with all four of its switches on."""
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    problems: list[Violation] = [
        (f"{resource_label(block)} leaves {off} off", block.urn)
        for block in stack.of_type(PUBLIC_ACCESS_BLOCK)
        if (off := [f for f in flags if str(block.props.get(f)).lower() != "true"])
    ]
    problems += [
        (f"{resource_label(bucket)} has no public access block", bucket.urn)
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
                (
                    f"{resource_label(bucket)} accepts requests without TLS (no aws:SecureTransport deny)",
                    bucket.urn,
                )
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
