"""The rules of inferstack's policy pack, as pure functions over engine-form resource properties.

Each rule takes a resource's type token and its properties as the Analyzer receives them (camelCase)
and returns the violations it finds, one message each. The pack (``policies/pack.py``) wraps them
for pulumi-policy; tests call them directly with passing and failing fixtures. Only pure tables of
inferstack are imported here: the Analyzer process must never register resources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from inferstack.infra.instance_types import INSTANCE_TYPES

Props = Mapping[str, Any]
Check = Callable[[str, Props], list[str]]

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RELEASE = "kubernetes:helm.sh/v3:Release"
REQUIRED_LOG_TYPES = {"api", "audit", "authenticator"}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    mandatory: bool
    check: Check


def _image_tag_problem(image: str) -> str | None:
    name, _, tag = image.rpartition(":")
    if "@sha256:" in image:
        return None
    if not name or "/" in tag or not tag:
        return f"image {image!r} has no tag"
    if tag == "latest":
        return f"image {image!r} uses the floating tag 'latest'"
    return None


def _containers(props: Props) -> Iterator[Mapping[str, Any]]:
    pod = props.get("spec", {}).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", []) or []
    yield from pod.get("containers", []) or []


def pinned_images(resource_type: str, props: Props) -> list[str]:
    """Containers and Helm image values name a fixed tag (or a digest)."""
    problems: list[str] = []
    if resource_type == DEPLOYMENT:
        for container in _containers(props):
            problem = _image_tag_problem(str(container.get("image", "")))
            if problem:
                problems.append(f"container {container.get('name')!r}: {problem}")
    if resource_type == RELEASE:

        def walk(node: Any, path: str) -> None:
            if isinstance(node, Mapping):
                if node.get("tag") == "latest":
                    problems.append(f"Helm value {path}.tag is 'latest'")
                for key, value in node.items():
                    walk(value, f"{path}.{key}" if path else str(key))

        walk(props.get("values", {}), "")
    return problems


def pinned_charts(resource_type: str, props: Props) -> list[str]:
    """A Helm release installs one exact chart version, from a named repository."""
    if resource_type != RELEASE:
        return []
    version = str(props.get("version", ""))
    problems = []
    if not version or any(c in version for c in "^~*<>=x ") or version.count(".") != 2:
        problems.append(f"chart {props.get('chart')!r} version {version!r} is not an exact x.y.z version")
    if not props.get("repositoryOpts", {}).get("repo"):
        problems.append(f"chart {props.get('chart')!r} names no repository")
    return problems


def eks_cluster_hardened(resource_type: str, props: Props) -> list[str]:
    if resource_type != "aws:eks/cluster:Cluster":
        return []
    problems = []
    vpc = props.get("vpcConfig", {})
    if not vpc.get("endpointPrivateAccess"):
        problems.append("the private API endpoint is off")
    if vpc.get("endpointPublicAccess"):
        cidrs = vpc.get("publicAccessCidrs") or ["0.0.0.0/0"]
        if any(c.endswith("/0") for c in cidrs):
            problems.append(f"the public API endpoint is open to {cidrs}")
    encryption = props.get("encryptionConfig") or {}
    if "secrets" not in (encryption.get("resources") or []):
        problems.append("secrets are not encrypted with a KMS key")
    missing = REQUIRED_LOG_TYPES - set(props.get("enabledClusterLogTypes") or [])
    if missing:
        problems.append(f"control-plane logs {sorted(missing)} are off")
    if (props.get("accessConfig") or {}).get("authenticationMode") not in ("API", "API_AND_CONFIG_MAP"):
        problems.append("authentication does not use access entries (authenticationMode API)")
    return problems


def imdsv2_and_encrypted_volumes(resource_type: str, props: Props) -> list[str]:
    if resource_type != "aws:ec2/launchTemplate:LaunchTemplate":
        return []
    problems = []
    metadata = props.get("metadataOptions") or {}
    if metadata.get("httpTokens") != "required":
        problems.append("instance metadata allows IMDSv1 (httpTokens must be 'required')")
    for mapping in props.get("blockDeviceMappings") or []:
        ebs = mapping.get("ebs") or {}
        if str(ebs.get("encrypted")).lower() != "true":
            problems.append(f"volume {mapping.get('deviceName')} is not encrypted")
    return problems


def gpu_nodes_tainted(resource_type: str, props: Props) -> list[str]:
    """GPU node groups carry the nvidia.com/gpu taint and an NVIDIA AMI, so only GPU pods land there."""
    if resource_type != "aws:eks/nodeGroup:NodeGroup":
        return []
    types = props.get("instanceTypes") or []
    if not any(t in INSTANCE_TYPES and INSTANCE_TYPES[t].is_gpu for t in types):
        return []
    problems = []
    taints = props.get("taints") or []
    if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NO_SCHEDULE" for t in taints):
        problems.append(f"GPU node group ({types}) lacks the nvidia.com/gpu NoSchedule taint")
    if "NVIDIA" not in str(props.get("amiType", "")):
        problems.append(f"GPU node group uses AMI type {props.get('amiType')!r}, not an NVIDIA one")
    if props.get("capacityType") == "SPOT" and len(types) < 2:
        problems.append("a spot GPU group needs at least 2 instance types")
    return problems


def s3_public_access_blocked(resource_type: str, props: Props) -> list[str]:
    if resource_type != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        return []
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    off = [f for f in flags if not props.get(f)]
    return [f"public access block leaves {off} off"] if off else []


def no_static_aws_keys(resource_type: str, props: Props) -> list[str]:
    """Kubernetes objects never carry AWS keys: pods get credentials through IRSA."""
    if not resource_type.startswith("kubernetes:"):
        return []
    text = json.dumps(props, default=str)
    found = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key") if k in text]
    return [f"static AWS credentials ({', '.join(found)}) in a Kubernetes object; use IRSA"] if found else []


def triton_production_ready(resource_type: str, props: Props) -> list[str]:
    """A Triton Deployment has health probes, GPU limits, a restrictive security context and a drain
    that fits the two-minute spot notice."""
    if resource_type != DEPLOYMENT:
        return []
    problems = []
    for container in _containers(props):
        if container.get("name") != "triton":
            continue
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"no {probe}")
        limits = (container.get("resources") or {}).get("limits") or {}
        if "nvidia.com/gpu" not in limits or "memory" not in limits:
            problems.append("no GPU or memory limit")
        security = container.get("securityContext") or {}
        if not security.get("runAsNonRoot") or security.get("allowPrivilegeEscalation", True):
            problems.append("runs as root or allows privilege escalation")
    pod = props.get("spec", {}).get("template", {}).get("spec", {})
    if (
        any(c.get("name") == "triton" for c in _containers(props))
        and pod.get("terminationGracePeriodSeconds", 30) >= 120
    ):
        problems.append("terminationGracePeriodSeconds does not fit the 120 s spot notice")
    return problems


RULES: tuple[Rule, ...] = (
    Rule("pinned-images", "Images run a fixed tag or digest, never 'latest'.", True, pinned_images),
    Rule("pinned-charts", "Helm releases install an exact chart version.", True, pinned_charts),
    Rule(
        "eks-cluster-hardened",
        "EKS: private endpoint, KMS secrets, audit logs, access entries.",
        True,
        eks_cluster_hardened,
    ),
    Rule(
        "imdsv2-encrypted-volumes",
        "Launch templates require IMDSv2 and encrypt volumes.",
        True,
        imdsv2_and_encrypted_volumes,
    ),
    Rule("gpu-nodes-tainted", "GPU node groups are tainted and run NVIDIA AMIs.", True, gpu_nodes_tainted),
    Rule(
        "s3-public-access-blocked",
        "Model buckets block every form of public access.",
        True,
        s3_public_access_blocked,
    ),
    Rule("no-static-aws-keys", "No AWS keys in Kubernetes objects; IRSA only.", True, no_static_aws_keys),
    Rule(
        "triton-production-ready",
        "Triton: probes, GPU limits, non-root, spot-safe drain.",
        False,
        triton_production_ready,
    ),
)
