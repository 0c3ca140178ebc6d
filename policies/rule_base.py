"""What every resource rule shares: the types it reads, the rule's shape, and readers of engine-form
properties (pod specs, containers, GPUs, NodePool requirements, IAM statements). Pure: the Analyzer
process imports it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from inferstack.infra.instance_types import INSTANCE_TYPES

Props = Mapping[str, Any]
Config = Mapping[str, Any]
Check = Callable[[str, Props, Config], list[str]]
Level = Literal["mandatory", "advisory", "disabled"]

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RELEASE = "kubernetes:helm.sh/v3:Release"
CLUSTER = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
QUEUE = "aws:sqs/queue:Queue"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
EBS_CSI = "ebs.csi.aws.com"  # infra.storage.EBS_CSI_PROVISIONER (a test holds them equal)
POD_CONTROLLERS = (
    DEPLOYMENT,
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:batch/v1:Job",
)
IAM_POLICIES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
GPU_RESOURCE = "nvidia.com/gpu"
REQUIRED_LOG_TYPES = {"api", "audit", "authenticator"}


@dataclass(frozen=True)
class RuleBase:
    """What the pack declares of any rule: its name, what it wants, its default level and config."""

    name: str
    description: str
    level: Level
    # JSON-schema properties of the rule's config (each with a default), as `--policy-pack-config` sets them.
    config_schema: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, kw_only=True)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: schema["default"] for key, schema in self.config_schema.items()}


@dataclass(frozen=True)
class Rule(RuleBase):
    """A policy on one resource at a time."""

    check: Check


# --- shared readers ---------------------------------------------------------------------------------


def namespace_of(props: Props) -> str:
    """A Kubernetes object's namespace, as the API server defaults it."""
    return str((props.get("metadata") or {}).get("namespace", "default"))


def pod_spec(props: Props) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = (props.get("spec") or {}).get("template", {}).get("spec") or {}
    return spec


def containers(props: Props) -> Iterator[Mapping[str, Any]]:
    pod = pod_spec(props)
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def is_triton(container: Mapping[str, Any]) -> bool:
    """A container that runs the Triton server: named so, or from Triton's image with its own entrypoint
    or ``tritonserver`` as the command; not a step that borrows the image for its python3 (the
    model-cache fill), which runs to completion before Triton and has no server to probe."""
    command = " ".join(str(part) for part in container.get("command") or [])
    runs_server = not command or "tritonserver" in command
    return container.get("name") == "triton" or (
        "tritonserver" in str(container.get("image", "")) and runs_server
    )


def gpus_of(container: Mapping[str, Any], kind: str = "limits") -> float:
    """The GPUs a container asks for (``limits`` or ``requests``); 0 when it names none."""
    value = ((container.get("resources") or {}).get(kind) or {}).get(GPU_RESOURCE, 0)
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def gpus_per_node(instance_types: list[str]) -> int:
    """GPUs per node of a group (the fewest among its types); 0 for CPU or unknown types."""
    counts = [INSTANCE_TYPES[t].gpus for t in instance_types if t in INSTANCE_TYPES]
    return min(counts) if counts and len(counts) == len(instance_types) else 0


def pool_requirement(props: Props, key: str) -> list[str] | None:
    """The values a NodePool's ``In`` requirement on ``key`` allows; None when it names none."""
    template = ((props.get("spec") or {}).get("template") or {}).get("spec") or {}
    for requirement in template.get("requirements") or []:
        if requirement.get("key") == key and requirement.get("operator") == "In":
            return [str(v) for v in requirement.get("values") or []]
    return None


def pool_gpus_per_node(props: Props) -> int:
    """GPUs per node of a NodePool limited to GPU instance types (0 when its types are not named)."""
    return gpus_per_node(pool_requirement(props, "node.kubernetes.io/instance-type") or [])


def pool_gpu_limit(props: Props) -> float | None:
    """The GPUs a NodePool may hold at most (its ``limits``); None when unbounded."""
    limit = ((props.get("spec") or {}).get("limits") or {}).get(GPU_RESOURCE)
    try:
        return float(limit) if limit is not None else None
    except (TypeError, ValueError):
        return None


def statements(document: Any) -> list[Mapping[str, Any]]:
    """An IAM policy document's statements (the engine holds the document as JSON text)."""
    try:
        parsed = json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError:
        return []
    found = (parsed or {}).get("Statement") or []
    return [found] if isinstance(found, Mapping) else list(found)


def listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value is not None else []


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
