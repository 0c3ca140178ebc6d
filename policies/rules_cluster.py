"""Resource rules on the supply chain, the EKS control plane and the nodes: pinned images and charts,
secrets encryption, endpoint and audit logs, IMDSv2, encrypted volumes, GPU groups' taints, spot
diversity and bounds."""

from __future__ import annotations

import ipaddress
from typing import Any

from inferstack.policies.rule_base import (
    CLUSTER,
    EBS_CSI,
    GPU_RESOURCE,
    LAUNCH_TEMPLATE,
    NODE_CLASS,
    NODE_GROUP,
    NODE_POOL,
    POD_CONTROLLERS,
    RELEASE,
    REQUIRED_LOG_TYPES,
    STORAGE_CLASS,
    Config,
    Props,
    containers,
    gpus_per_node,
    pool_gpu_limit,
    pool_gpus_per_node,
    pool_requirement,
    truthy,
)

# --- supply chain -----------------------------------------------------------------------------------


def _image_tag_problem(image: str) -> str | None:
    name, _, tag = image.rpartition(":")
    if "@sha256:" in image:
        return None
    if not name or "/" in tag or not tag:
        return f"image {image!r} has no tag"
    if tag == "latest":
        return f"image {image!r} uses the floating tag 'latest'"
    return None


def pinned_images(resource_type: str, props: Props, config: Config) -> list[str]:
    """Containers and Helm image values name a fixed tag (or a digest)."""
    problems: list[str] = []
    if resource_type in POD_CONTROLLERS:
        for container in containers(props):
            problem = _image_tag_problem(str(container.get("image", "")))
            if problem:
                problems.append(f"container {container.get('name')!r}: {problem}")
    if resource_type == RELEASE:

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                if node.get("tag") == "latest":
                    problems.append(f"Helm value {path}.tag is 'latest'")
                for key, value in node.items():
                    walk(value, f"{path}.{key}" if path else str(key))
            elif isinstance(node, list):
                for i, item in enumerate(node):
                    walk(item, f"{path}[{i}]")

        walk(props.get("values") or {}, "")
    return problems


def pinned_charts(resource_type: str, props: Props, config: Config) -> list[str]:
    """A Helm release installs one exact chart version, from a named repository."""
    if resource_type != RELEASE:
        return []
    version = str(props.get("version", ""))
    problems = []
    if not version or any(c in version for c in "^~*<>=x ") or version.count(".") != 2:
        problems.append(f"chart {props.get('chart')!r} version {version!r} is not an exact x.y.z version")
    oci = str(props.get("chart", "")).startswith("oci://")  # an OCI reference names its registry
    if not oci and not (props.get("repositoryOpts") or {}).get("repo"):
        problems.append(f"chart {props.get('chart')!r} names no repository")
    return problems


# --- EKS control plane ------------------------------------------------------------------------------


def eks_secrets_kms(resource_type: str, props: Props, config: Config) -> list[str]:
    if resource_type != CLUSTER:
        return []
    encryption = props.get("encryptionConfig") or {}
    if "secrets" not in (encryption.get("resources") or []):
        return ["Kubernetes secrets are not encrypted with a KMS key (encryptionConfig.resources)"]
    if not (encryption.get("provider") or {}).get("keyArn"):
        return ["secrets encryption names no KMS key (encryptionConfig.provider.keyArn)"]
    return []


def eks_endpoint_restricted(resource_type: str, props: Props, config: Config) -> list[str]:
    """The private endpoint is on; a public one is open only to named, non-/0 CIDRs."""
    if resource_type != CLUSTER:
        return []
    vpc = props.get("vpcConfig") or {}
    problems = []
    if not truthy(vpc.get("endpointPrivateAccess")):
        problems.append("the private API endpoint is off: nodes reach the API over the internet")
    # AWS opens a public endpoint with no CIDRs to 0.0.0.0/0.
    if truthy(vpc.get("endpointPublicAccess", True)):
        cidrs = list(vpc.get("publicAccessCidrs") or ["0.0.0.0/0"])
        open_to_all = [c for c in cidrs if _prefix_length(c) == 0]
        if open_to_all:
            problems.append(f"the public API endpoint is open to the whole internet ({open_to_all})")
    return problems


def _prefix_length(cidr: str) -> int | None:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen
    except ValueError:
        return None


def eks_audit_logs(resource_type: str, props: Props, config: Config) -> list[str]:
    """Audit trail and access entries: who did what on the API is logged, and access is IAM-managed."""
    if resource_type != CLUSTER:
        return []
    problems = []
    missing = REQUIRED_LOG_TYPES - set(props.get("enabledClusterLogTypes") or [])
    if missing:
        problems.append(f"control-plane logs {sorted(missing)} are off")
    if (props.get("accessConfig") or {}).get("authenticationMode") not in ("API", "API_AND_CONFIG_MAP"):
        problems.append("authentication does not use access entries (authenticationMode API)")
    return problems


# --- nodes ------------------------------------------------------------------------------------------


def imds_v2_hop_limit_1(resource_type: str, props: Props, config: Config) -> list[str]:
    """IMDSv2 only, one hop: host-network pods still reach it, other pods cannot take the node role."""
    if resource_type not in (LAUNCH_TEMPLATE, NODE_CLASS):
        return []
    spec = props.get("spec") or {} if resource_type == NODE_CLASS else props
    metadata = spec.get("metadataOptions") or {}
    problems = []
    if metadata.get("httpTokens") != "required":
        problems.append("instance metadata allows IMDSv1 (metadataOptions.httpTokens must be 'required')")
    hops = metadata.get("httpPutResponseHopLimit")
    if hops is None or float(hops) != 1:
        # Unset, the AMI decides: EKS AL2023 AMIs answer 2 hops, i.e. every pod.
        given = "unset (EKS AMIs then allow 2)" if hops is None else f"{float(hops):g}"
        problems.append(
            f"IMDS hop limit is {given}, not 1: "
            "every pod can read the node role's credentials (metadataOptions.httpPutResponseHopLimit)"
        )
    return problems


def encrypted_volumes(resource_type: str, props: Props, config: Config) -> list[str]:
    """Encrypted with a named key: the account's default EBS key may be a customer-managed key the
    Auto Scaling service-linked role or Karpenter's controller (nodes) or the EBS CSI role (claims)
    cannot use, and then no node launches or claims stay Pending."""
    if resource_type == STORAGE_CLASS and props.get("provisioner") == EBS_CSI:
        parameters = props.get("parameters") or {}
        if not truthy(parameters.get("encrypted")):
            return ["the EBS StorageClass does not encrypt its volumes (parameters.encrypted)"]
        if not parameters.get("kmsKeyId"):
            return [
                "the EBS StorageClass encrypts with the account's default EBS key (no parameters.kmsKeyId)"
            ]
        return []
    if resource_type not in (LAUNCH_TEMPLATE, NODE_CLASS):
        return []
    spec = props.get("spec") or {} if resource_type == NODE_CLASS else props
    key_field = "kmsKeyID" if resource_type == NODE_CLASS else "kmsKeyId"  # each API's spelling
    problems = []
    for mapping in spec.get("blockDeviceMappings") or []:
        ebs = mapping.get("ebs") or {}
        if not truthy(ebs.get("encrypted")):
            problems.append(f"volume {mapping.get('deviceName')} is not encrypted")
        elif not ebs.get(key_field):
            problems.append(
                f"volume {mapping.get('deviceName')} is encrypted with the account's default EBS key "
                f"(no ebs.{key_field}): name a key the role that launches the node may use"
            )
    return problems


def _gpu_group(props: Props) -> int:
    return gpus_per_node(list(props.get("instanceTypes") or []))


def gpu_nodes_tainted(resource_type: str, props: Props, config: Config) -> list[str]:
    """GPU node groups carry the nvidia.com/gpu taint and an NVIDIA AMI, so only GPU pods land there."""
    if resource_type == NODE_POOL and pool_gpus_per_node(props):
        template = ((props.get("spec") or {}).get("template") or {}).get("spec") or {}
        if not any(
            t.get("key") == GPU_RESOURCE and t.get("effect") == "NoSchedule"
            for t in template.get("taints") or []
        ):
            return ["GPU NodePool lacks the nvidia.com/gpu NoSchedule taint (spec.template.spec.taints)"]
        return []  # Karpenter picks the NVIDIA variant of its AMI for GPU types itself
    if resource_type != NODE_GROUP or not _gpu_group(props):
        return []
    types = props.get("instanceTypes")
    problems = []
    taints = props.get("taints") or []
    if not any(t.get("key") == GPU_RESOURCE and t.get("effect") == "NO_SCHEDULE" for t in taints):
        problems.append(f"GPU node group ({types}) lacks the nvidia.com/gpu NoSchedule taint")
    if "NVIDIA" not in str(props.get("amiType", "")):
        problems.append(f"GPU node group uses AMI type {props.get('amiType')!r}, not an NVIDIA one")
    return problems


def spot_diversified(resource_type: str, props: Props, config: Config) -> list[str]:
    """A spot group draws from several pools, so one reclaimed pool does not take all its capacity."""
    minimum = int(config["minTypes"])
    if resource_type == NODE_POOL and "spot" in (pool_requirement(props, "karpenter.sh/capacity-type") or []):
        named = pool_requirement(props, "node.kubernetes.io/instance-type")
        if named is not None and len(named) < minimum:
            return [f"spot NodePool draws from {len(named)} instance type(s) {named}; at least {minimum}"]
        return []
    if resource_type != NODE_GROUP or props.get("capacityType") != "SPOT":
        return []
    types = list(props.get("instanceTypes") or [])
    if len(types) < minimum:
        return [f"spot node group draws from {len(types)} instance type(s) {types}; at least {minimum}"]
    return []


def gpu_max_bounded(resource_type: str, props: Props, config: Config) -> list[str]:
    """A GPU group's maximum is bounded: a runaway scale-up costs at most this many GPUs per group."""
    if resource_type == NODE_POOL and pool_gpus_per_node(props):
        # A pool stands for one group per zone it spans.
        zones = len(pool_requirement(props, "topology.kubernetes.io/zone") or []) or 1
        bound = int(config["maxGpusPerGroup"]) * zones
        limit = pool_gpu_limit(props)
        if limit is None or limit > bound:
            given = "unbounded (no limits.nvidia.com/gpu)" if limit is None else f"{limit:g} GPUs"
            return [
                f"GPU NodePool can grow to {given}; the bound is {bound} (maxGpusPerGroup x {zones} zone(s))"
            ]
        return []
    gpus = _gpu_group(props) if resource_type == NODE_GROUP else 0
    if not gpus:
        return []
    max_size = (props.get("scalingConfig") or {}).get("maxSize")
    bound = int(config["maxGpusPerGroup"])
    if max_size is None or float(max_size) * gpus > bound:
        total = "unbounded" if max_size is None else f"{int(float(max_size)) * gpus}"
        return [f"GPU node group can grow to {total} GPUs; the bound is {bound} (maxGpusPerGroup)"]
    return []


def gpu_min_zero(resource_type: str, props: Props, config: Config) -> list[str]:
    """Idle GPU groups scale to zero (enabled for dev stacks, where nobody serves at night)."""
    if resource_type != NODE_GROUP or not _gpu_group(props):
        return []
    min_size = (props.get("scalingConfig") or {}).get("minSize", 0)
    if float(min_size) != 0:
        return [f"GPU node group keeps {int(float(min_size))} node(s) running when idle; minSize must be 0"]
    return []
