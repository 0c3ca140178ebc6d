"""The resource rules of inferstack's policy pack, as pure functions over engine-form properties.

Each rule takes a resource's type token, its properties as the Analyzer receives them (camelCase,
plain dicts and lists: the pack converts pulumi-policy's proxies first) and the rule's config (its
schema's defaults overlaid with the pack config of the stack), and returns one message per violation.
Only pure tables of inferstack are imported here: the Analyzer process must never register resources.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import ipaddress
import json
import re
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


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


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
    if not _truthy(vpc.get("endpointPrivateAccess")):
        problems.append("the private API endpoint is off: nodes reach the API over the internet")
    # AWS opens a public endpoint with no CIDRs to 0.0.0.0/0.
    if _truthy(vpc.get("endpointPublicAccess", True)):
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
        if not _truthy(parameters.get("encrypted")):
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
        if not _truthy(ebs.get("encrypted")):
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


# --- Kubernetes workloads ---------------------------------------------------------------------------

_KEY_NAMES = {"awsaccesskeyid", "awssecretaccesskey", "awssessiontoken", "secretaccesskey", "accesskeyid"}
_ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
_CREDENTIALS_FILE = re.compile(r"aws_secret_access_key\s*=", re.IGNORECASE)


def _key_name(text: str) -> bool:
    return re.sub(r"[^a-z]", "", text.lower()) in _KEY_NAMES


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def _static_keys(node: Any, path: str, secret_data: bool) -> Iterator[str]:
    if isinstance(node, dict):
        # An env entry: {"name": "AWS_SECRET_ACCESS_KEY", "value"/"valueFrom": ...}
        if (
            isinstance(node.get("name"), str)
            and _key_name(node["name"])
            and ("value" in node or "valueFrom" in node)
        ):
            yield f"{path}: environment variable {node['name']}"
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if _key_name(str(key)) and value not in (None, "", {}, []):
                yield f"{where}: a key named {key}"
            else:
                yield from _static_keys(value, where, secret_data or key == "data")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _static_keys(item, f"{path}[{i}]", secret_data)
    elif isinstance(node, str):
        for text in (node, _decoded(node) if secret_data else ""):
            if _ACCESS_KEY_ID.search(text) or _CREDENTIALS_FILE.search(text):
                yield f"{path}: an AWS access key or credentials file"
                break


def no_static_aws_keys(resource_type: str, props: Props, config: Config) -> list[str]:
    """Kubernetes objects and Helm values never carry AWS keys: pods get credentials through IRSA."""
    if not resource_type.startswith("kubernetes:"):
        return []
    found = sorted(set(_static_keys(dict(props), "", False)))
    return [f"static AWS credentials at {where}; use IRSA" for where in found]


def _log_group_scope_problem(resource: str) -> str | None:
    """None when ``resource`` is one named log group (or its streams), else why not."""
    if ":log-group:" not in resource:
        return f"{resource!r} is not a log group"
    group = resource.split(":log-group:", 1)[1].split(":", 1)[0]
    if not group or "*" in group or "?" in group:
        return f"{resource!r} matches more than one log group"
    return None


def logs_scoped(resource_type: str, props: Props, config: Config) -> list[str]:
    """Log shippers write to their own log group: PutLogEvents never on '*' or a wildcard group."""
    if resource_type not in IAM_POLICIES:
        return []
    problems: list[str] = []
    for statement in statements(props.get("policy")):
        actions = [a.lower() for a in listed(statement.get("Action"))]
        if statement.get("Effect") != "Allow" or not any(
            fnmatch.fnmatchcase("logs:putlogevents", action) for action in actions
        ):
            continue
        if "NotResource" in statement:
            problems.append("logs:PutLogEvents is allowed on everything but a NotResource list")
        for resource in listed(statement.get("Resource")):
            problem = _log_group_scope_problem(resource)
            if problem:
                problems.append(f"logs:PutLogEvents allowed where {problem}")
    return problems


def triton_probes(resource_type: str, props: Props, config: Config) -> list[str]:
    """Triton is only sent traffic once its models are loaded, and is restarted when it hangs."""
    if resource_type != DEPLOYMENT:
        return []
    # An init container that runs to completion (the model wait, in Triton's image) is not serving,
    # and Kubernetes refuses probes on it.
    steps = [c for c in pod_spec(props).get("initContainers") or [] if c.get("restartPolicy") != "Always"]
    return [
        f"container {c.get('name')!r} has no {probe}"
        for c in containers(props)
        if is_triton(c) and c not in steps
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if probe not in c
    ]


def triton_non_root_read_only(resource_type: str, props: Props, config: Config) -> list[str]:
    if resource_type != DEPLOYMENT:
        return []
    problems = []
    pod_security = pod_spec(props).get("securityContext") or {}
    for container in containers(props):
        if not is_triton(container):
            continue
        security = {**pod_security, **(container.get("securityContext") or {})}
        name = container.get("name")
        if not _truthy(security.get("runAsNonRoot")) or float(security.get("runAsUser", 1)) == 0:
            problems.append(f"container {name!r} may run as root (runAsNonRoot)")
        if not _truthy(security.get("readOnlyRootFilesystem")):
            problems.append(f"container {name!r} has a writable root filesystem (readOnlyRootFilesystem)")
        if _truthy(security.get("allowPrivilegeEscalation", True)) or _truthy(security.get("privileged")):
            problems.append(f"container {name!r} allows privilege escalation")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problems.append(f"container {name!r} keeps Linux capabilities (capabilities.drop: [ALL])")
    return problems


def _targets_gpu_nodes(pod: Mapping[str, Any]) -> bool:
    return "nvidia.com/gpu.present" in str(pod.get("nodeSelector") or {}) + str(pod.get("affinity") or {})


def gpu_workloads_scheduled(resource_type: str, props: Props, config: Config) -> list[str]:
    """A pod that wants GPUs asks for them as limits and tolerates the GPU taint, or it never schedules
    (or lands on a GPU node without a GPU of its own)."""
    if resource_type not in POD_CONTROLLERS:
        return []
    pod = pod_spec(props)
    all_containers = list(containers(props))
    wants_gpu = any(
        gpus_of(c) or gpus_of(c, "requests") or is_triton(c) for c in all_containers
    ) or _targets_gpu_nodes(pod)
    if not wants_gpu:
        return []
    # Kubernetes counts extended resources by their limits; a sidecar needs none of its own.
    problems = [
        f"container {c.get('name')!r} requests GPUs without an nvidia.com/gpu limit"
        for c in all_containers
        if gpus_of(c, "requests") and not gpus_of(c)
    ]
    if not any(gpus_of(c) for c in all_containers):
        problems.append("the pod runs on GPU nodes without an nvidia.com/gpu limit")
    tolerations = pod.get("tolerations") or []
    if not any(
        t.get("key") in (GPU_RESOURCE, None) and t.get("effect") in ("NoSchedule", None) for t in tolerations
    ):
        problems.append("the pod does not tolerate the nvidia.com/gpu:NoSchedule taint of GPU nodes")
    return problems


def _flag_values(argv: list[str], flag: str) -> list[str]:
    """Every value ``flag`` is given, as ``--flag=value`` or ``--flag value``."""
    return [
        arg.removeprefix(f"{flag}=") if arg != flag else argv[i + 1]
        for i, arg in enumerate(argv)
        if arg.startswith(f"{flag}=") or (arg == flag and i + 1 < len(argv))
    ]


_KEY_REFERENCE = re.compile(r"^\$\([A-Za-z_][A-Za-z0-9_]*\)$")


def triton_admin_restricted(resource_type: str, props: Props, config: Config) -> list[str]:
    """A Triton that loads and unloads models on request does it only for callers with a key, on both
    protocols, and the key comes from the container's environment (a Secret), not the pod spec."""
    if resource_type not in POD_CONTROLLERS:
        return []
    problems = []
    for container in containers(props):
        argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        modes = set(_flag_values(argv, "--model-control-mode")) & {"explicit", "poll"}
        if not is_triton(container) or not modes:
            continue
        name = container.get("name")
        for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
            rules = [value.partition(":") for value in _flag_values(argv, flag)]
            if not any("model-repository" in apis.split(",") for apis, _, _ in rules):
                problems.append(
                    f"container {name!r} runs --model-control-mode={min(modes)} without {flag} restricting "
                    "model-repository: anyone who reaches it can unload a model"
                )
            for _, _, header in rules:
                if not _KEY_REFERENCE.match(header.partition("=")[2]):
                    problems.append(
                        f"container {name!r} writes the key of {flag} into the pod spec; "
                        "take it from a Secret through $(VAR)"
                    )
    return problems


def karpenter_disruption_bounded(resource_type: str, props: Props, config: Config) -> list[str]:
    """A NodePool replaces its nodes in time (expireAfter) and disrupts at most maxNodes at once."""
    if resource_type != NODE_POOL:
        return []
    spec = props.get("spec") or {}
    problems = []
    expire = ((spec.get("template") or {}).get("spec") or {}).get("expireAfter")
    if expire in (None, "Never"):
        problems.append(f"NodePool nodes never expire (expireAfter {expire!r}): they keep an old AMI forever")
    budgets = (spec.get("disruption") or {}).get("budgets")
    maximum = int(config["maxNodes"])
    if not budgets:
        problems.append(
            f"NodePool has no disruption budget (Karpenter's default is 10% of nodes); at most {maximum}"
        )
    for budget in budgets or []:
        nodes = str(budget.get("nodes", "10%"))
        if not nodes.isdigit() or int(nodes) > maximum:
            problems.append(f"NodePool budget lets {nodes} node(s) be disrupted at once; at most {maximum}")
    return problems


def interruption_queue_scoped(resource_type: str, props: Props, config: Config) -> list[str]:
    """A queue is encrypted, and only AWS services may send to it (EventBridge, for interruptions)."""
    if resource_type == QUEUE:
        if not _truthy(props.get("sqsManagedSseEnabled")) and not props.get("kmsMasterKeyId"):
            return ["queue is not encrypted at rest (sqsManagedSseEnabled or kmsMasterKeyId)"]
        return []
    if resource_type != QUEUE_POLICY:
        return []
    allowed = set(config["senders"])
    problems = []
    for statement in statements(props.get("policy")):
        actions = listed(statement.get("Action"))
        if statement.get("Effect") != "Allow" or not any(
            a in ("sqs:SendMessage", "sqs:*", "*") for a in actions
        ):
            continue
        principal = statement.get("Principal")
        services = listed(principal.get("Service")) if isinstance(principal, Mapping) else []
        others = [] if isinstance(principal, Mapping) and set(principal) == {"Service"} else [principal]
        strangers = [*others, *sorted(set(services) - allowed)]
        if strangers:
            problems.append(f"queue policy lets {strangers} send; only {sorted(allowed)} may")
    return problems


def spot_safe_drain(resource_type: str, props: Props, config: Config) -> list[str]:
    """Triton drains inside the two-minute spot interruption notice."""
    if resource_type != DEPLOYMENT or not any(is_triton(c) for c in containers(props)):
        return []
    grace = float(pod_spec(props).get("terminationGracePeriodSeconds", 30))
    if grace >= 120:
        return [f"terminationGracePeriodSeconds {grace:g} does not fit the 120 s spot notice"]
    return []


RULES: tuple[Rule, ...] = (
    Rule("pinned-images", "Images run a fixed tag or digest, never 'latest'.", "mandatory", pinned_images),
    Rule("pinned-charts", "Helm releases install an exact chart version.", "mandatory", pinned_charts),
    Rule("eks-secrets-kms", "EKS encrypts Kubernetes secrets with a KMS key.", "mandatory", eks_secrets_kms),
    Rule(
        "eks-endpoint-restricted",
        "EKS: private endpoint on; a public one only for named CIDRs.",
        "mandatory",
        eks_endpoint_restricted,
    ),
    Rule("eks-audit-logs", "EKS: audit logs on, access entries for access.", "mandatory", eks_audit_logs),
    Rule(
        "imds-v2-hop-limit-1",
        "Launch templates require IMDSv2 with a hop limit of 1.",
        "mandatory",
        imds_v2_hop_limit_1,
    ),
    Rule(
        "encrypted-volumes",
        "Node and claim volumes are encrypted with a named KMS key.",
        "mandatory",
        encrypted_volumes,
    ),
    Rule(
        "gpu-nodes-tainted",
        "GPU node groups are tainted and run NVIDIA AMIs.",
        "mandatory",
        gpu_nodes_tainted,
    ),
    Rule(
        "spot-diversified",
        "Spot node groups draw from several instance types.",
        "mandatory",
        spot_diversified,
        config_schema={"minTypes": {"type": "integer", "minimum": 1, "default": 3}},
    ),
    Rule(
        "gpu-max-bounded",
        "Each GPU node group has a bounded maximum.",
        "mandatory",
        gpu_max_bounded,
        config_schema={"maxGpusPerGroup": {"type": "integer", "minimum": 1, "default": 16}},
    ),
    Rule("gpu-min-zero", "GPU node groups scale to zero when idle.", "disabled", gpu_min_zero),
    Rule(
        "no-static-aws-keys",
        "No AWS keys in Kubernetes objects or Helm values; IRSA only.",
        "mandatory",
        no_static_aws_keys,
    ),
    Rule(
        "logs-scoped",
        "Log shippers write only to named log groups (no '*' for logs:PutLogEvents).",
        "mandatory",
        logs_scoped,
    ),
    Rule("triton-probes", "Triton has startup, readiness and liveness probes.", "mandatory", triton_probes),
    Rule(
        "triton-non-root-read-only",
        "Triton runs as non-root on a read-only root filesystem, without privileges.",
        "mandatory",
        triton_non_root_read_only,
    ),
    Rule(
        "gpu-workloads-scheduled",
        "GPU workloads carry GPU limits and tolerate the GPU taint.",
        "mandatory",
        gpu_workloads_scheduled,
    ),
    Rule(
        "triton-admin-restricted",
        "Triton's model-repository API answers only callers with a key, over HTTP and gRPC.",
        "mandatory",
        triton_admin_restricted,
    ),
    Rule("spot-safe-drain", "Triton drains within the spot notice.", "advisory", spot_safe_drain),
    Rule(
        "karpenter-disruption-bounded",
        "NodePools expire their nodes and disrupt at most maxNodes at a time.",
        "disabled",
        karpenter_disruption_bounded,
        config_schema={"maxNodes": {"type": "integer", "minimum": 1, "default": 1}},
    ),
    Rule(
        "interruption-queue-scoped",
        "Queues are encrypted and only AWS services send to them.",
        "mandatory",
        interruption_queue_scoped,
        config_schema={
            "senders": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["events.amazonaws.com", "sqs.amazonaws.com"],
            }
        },
    ),
)
