"""Resource rules on what runs in the cluster: no static AWS keys, scoped log writes, Triton's probes,
security context and admin lock, GPU scheduling, Karpenter's disruption budget and interruption queue,
and draining within the spot notice."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Iterator, Mapping
from typing import Any

from inferstack.policies.rule_base import (
    DEPLOYMENT,
    GPU_RESOURCE,
    IAM_POLICIES,
    NODE_POOL,
    POD_CONTROLLERS,
    QUEUE,
    QUEUE_POLICY,
    Config,
    Props,
    containers,
    gpus_of,
    is_triton,
    listed,
    pod_spec,
    statements,
    truthy,
)

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
        if not truthy(security.get("runAsNonRoot")) or float(security.get("runAsUser", 1)) == 0:
            problems.append(f"container {name!r} may run as root (runAsNonRoot)")
        if not truthy(security.get("readOnlyRootFilesystem")):
            problems.append(f"container {name!r} has a writable root filesystem (readOnlyRootFilesystem)")
        if truthy(security.get("allowPrivilegeEscalation", True)) or truthy(security.get("privileged")):
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
        if not truthy(props.get("sqsManagedSseEnabled")) and not props.get("kmsMasterKeyId"):
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
