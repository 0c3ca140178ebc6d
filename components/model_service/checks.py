"""Every check of a TritonModelService's name and args, before any resource is registered."""

from __future__ import annotations

import math
import re

from inferstack.components.canary import check_canary
from inferstack.components.model_service.args import (
    EXIT_MARGIN_S,
    FRONT_MAX_CPU,
    FRONT_MEMORY_GIB,
    MAX_NAME_LENGTH,
    NODE_CPU_RESERVED,
    NODE_MEMORY_RESERVED_GIB,
    SPOT_NOTICE_S,
    ModelSource,
    TritonModelServiceArgs,
    derived_cache_gib,
    front_cpu,
    front_cpu_needed,
    grace_period_s,
    model_cache_gib,
    namespace_of,
    needed_cache_gib,
    prod_min_replicas,
)
from inferstack.components.model_service.pod import tracing_args
from inferstack.components.request_front import HEADER_ALLOWANCE, MAX_REQUEST_BYTES
from inferstack.infra.errors import InvalidInput
from inferstack.infra.fields import check_field_types
from inferstack.infra.instance_types import lookup
from inferstack.infra.log_volume import TRITON_LOG_BYTES_PER_REQUEST
from inferstack.infra.model_store import check_prefix

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _dns_label(field_name: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise InvalidInput(
            field_name,
            value,
            "a DNS-1123 label: 1-63 lowercase letters, digits or '-', alphanumeric at both ends",
        )


def _validate_source(source: ModelSource) -> None:
    if source.role_arn is None and source.model_store is None:
        raise InvalidInput(
            "source",
            "neither",
            "a ModelStore with prefix and OIDC provider, or a role_arn with repository_uri",
        )
    if source.role_arn is not None and source.model_store is not None:
        raise InvalidInput("source", "both", "either a ModelStore or a role_arn, not both")
    if source.role_arn is not None and source.repository_uri is None:
        raise InvalidInput(
            "source.repository_uri", None, "the s3:// URI of the model repository the role can read"
        )
    if isinstance(source.repository_uri, str) and not source.repository_uri.startswith("s3://"):
        raise InvalidInput("source.repository_uri", source.repository_uri, "an s3:// URI")
    if source.model_store is not None:
        if source.prefix is None:
            raise InvalidInput("source.prefix", None, "the key prefix of the service's model repository")
        try:
            check_prefix(source.prefix)
        except InvalidInput as error:
            raise InvalidInput("source.prefix", error.value, error.allowed) from None
        if source.oidc_provider_arn is None or source.oidc_issuer_url is None:
            raise InvalidInput(
                "source.oidc_provider_arn", None, "the cluster's OIDC provider ARN and issuer URL"
            )


def _validate_cache(args: TritonModelServiceArgs) -> None:
    explicit, served = args.model_cache_gib, args.source.served
    if explicit is not None and explicit <= 0:
        raise InvalidInput("model_cache_gib", explicit, "a number of GiB > 0, or None to derive it")
    if explicit is not None and served is not None and explicit < needed_cache_gib(served.bytes):
        raise InvalidInput(
            "model_cache_gib",
            explicit,
            f"at least {needed_cache_gib(served.bytes):.3g} GiB: the fill places the served versions of "
            f"{sorted(served.versions)} ({served.bytes} bytes) in the pod's folder; unset, it is "
            f"{derived_cache_gib(served.bytes):g} GiB",
        )
    if served is not None and sorted(served.versions) != sorted(args.models):
        raise InvalidInput(
            "source.served", sorted(served.versions), f"the service's models, {sorted(args.models)}"
        )
    canary = args.canary
    if served is not None and canary is not None and canary.model in served.versions:
        shipped = served.versions[canary.model]
        for field_name in ("stable_version", "canary_version"):
            if getattr(canary, field_name) not in shipped:
                raise InvalidInput(
                    f"canary.{field_name}",
                    getattr(canary, field_name),
                    f"a version the repository's version_policy serves for {canary.model}: {list(shipped)} "
                    "(the canary splits requests between two loaded versions)",
                )


def _check_front(args: TritonModelServiceArgs) -> None:
    """The request front's sizing inputs, and a size one nginx worker can give."""
    limit = MAX_REQUEST_BYTES + HEADER_ALLOWANCE
    if isinstance(args.expected_request_bytes, bool) or not 1 <= args.expected_request_bytes <= limit:
        raise InvalidInput(
            "expected_request_bytes", args.expected_request_bytes, f"1..{limit}, the front's body limit"
        )
    if not 0 < args.expected_requests_per_second < math.inf:
        raise InvalidInput(
            "expected_requests_per_second", args.expected_requests_per_second, "a finite number > 0"
        )
    if (needed := front_cpu_needed(args)) > FRONT_MAX_CPU:
        raise InvalidInput(
            "expected_request_bytes",
            args.expected_request_bytes,
            f"a size the front's one nginx worker reads at {args.expected_requests_per_second:g} req/s "
            f"per replica ({needed:.2f} cores needed, {FRONT_MAX_CPU:g} at most): send large inputs as "
            "binary tensors, or lower expected_requests_per_second and raise max_replicas",
        )
    target = args.front_time_target_ms
    if target is not None and not 0 < target < math.inf:
        raise InvalidInput("front_time_target_ms", target, "None, or a finite number of ms > 0")


def validate(name: str, args: TritonModelServiceArgs) -> None:
    """Every check, before any resource is registered."""
    check_field_types(args)
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _RFC1035_LABEL.match(name):
        raise InvalidInput(
            "name",
            name,
            f"an RFC 1035 label of at most {MAX_NAME_LENGTH} characters (it names Services and the IAM "
            "role): lowercase letters, digits or '-', starting with a letter",
        )
    _dns_label("namespace", namespace_of(name, args))
    if not args.models:
        raise InvalidInput("models", list(args.models), "one or more model names")
    for i, model in enumerate(args.models):
        if not _MODEL_NAME.match(model):
            raise InvalidInput(f"models[{i}]", model, "a Triton model name: letters, digits, _ . -")
    if len(set(args.models)) != len(args.models):
        raise InvalidInput("models", list(args.models), "each model once")
    if args.environment not in ("prod", "dev"):
        raise InvalidInput("environment", args.environment, "prod or dev")
    if args.placement not in ("on-demand", "spot", "spot-with-fallback"):
        raise InvalidInput("placement", args.placement, "on-demand, spot or spot-with-fallback")
    if args.region is not None and not _REGION.match(args.region):
        raise InvalidInput("region", args.region, "an AWS region such as us-east-1")
    image, _, tag = args.image.rpartition(":")
    if not image or "/" in tag or tag in ("", "latest"):
        raise InvalidInput("image", args.image, "an image with a pinned tag (not 'latest', not missing)")
    if args.zones < 1:
        raise InvalidInput("zones", args.zones, "an integer >= 1")
    if not 1 <= args.min_replicas <= args.max_replicas:
        raise InvalidInput(
            "min_replicas", args.min_replicas, f"1 <= min_replicas <= max_replicas ({args.max_replicas})"
        )
    if args.environment == "prod" and args.min_replicas < (needed := prod_min_replicas(args.zones)):
        raise InvalidInput(
            "min_replicas",
            args.min_replicas,
            f"at least {needed} in prod over {args.zones} zones: a replica per zone, and one voluntary "
            "disruption beyond the disruption budget that survives a zone loss",
        )
    node = lookup(args.node_instance_type, field="node_instance_type")
    if not node.is_gpu:
        raise InvalidInput("node_instance_type", args.node_instance_type, "a GPU instance type")
    if not 1 <= args.gpus_per_replica <= node.gpus:
        raise InvalidInput("gpus_per_replica", args.gpus_per_replica, f"1..{node.gpus} (GPUs of {node.name})")
    memory_free = node.memory_gib - NODE_MEMORY_RESERVED_GIB - FRONT_MEMORY_GIB
    if not 0 < args.memory_gib <= memory_free:
        raise InvalidInput(
            "memory_gib",
            args.memory_gib,
            f"0 < memory_gib <= {memory_free:g}: what {node.name} leaves for pods after system pods "
            f"and the request front's {FRONT_MEMORY_GIB:g} GiB",
        )
    if not 0 < args.shm_gib < args.memory_gib:
        raise InvalidInput(
            "shm_gib", args.shm_gib, f"0 < shm_gib < memory_gib ({args.memory_gib:g}): /dev/shm is part of it"
        )
    _check_front(args)
    cpu_free = node.vcpus - NODE_CPU_RESERVED - front_cpu(args)
    if not 0 < args.cpu <= cpu_free:
        raise InvalidInput(
            "cpu",
            args.cpu,
            f"0 < cpu <= {cpu_free:g} on {node.name}, beside the request front's {front_cpu(args):g}",
        )
    for field_name in (
        "queue_time_target_ms",
        "pending_requests_per_replica",
        "model_load_timeout_s",
        "polling_interval_s",
    ):
        if getattr(args, field_name) <= 0:
            raise InvalidInput(field_name, getattr(args, field_name), "a number > 0")
    _validate_cache(args)
    check_model_cache(args)
    if args.cooldown_s < 0:
        raise InvalidInput("cooldown_s", args.cooldown_s, "a number of seconds >= 0")
    if args.gpu_utilization_target is not None and not 0 < args.gpu_utilization_target <= 100:
        raise InvalidInput(
            "gpu_utilization_target", args.gpu_utilization_target, "None, or a percentage in (0, 100]"
        )
    # Endpoint removal propagates to kube-proxy and load balancers in seconds; Triton needs time to finish.
    if args.drain_s < 5:
        raise InvalidInput("drain_s", args.drain_s, "at least 5 s for endpoints to be removed everywhere")
    if args.exit_timeout_s < 10:
        raise InvalidInput("exit_timeout_s", args.exit_timeout_s, "at least 10 s for in-flight requests")
    if grace_period_s(args) >= SPOT_NOTICE_S:
        raise InvalidInput(
            "exit_timeout_s",
            args.exit_timeout_s,
            f"drain_s ({args.drain_s}) + exit_timeout_s + {EXIT_MARGIN_S} < {SPOT_NOTICE_S} s, "
            "the spot interruption notice",
        )
    fallback = args.fallback_replicas
    if fallback is not None and not args.min_replicas <= fallback <= args.max_replicas:
        raise InvalidInput("fallback_replicas", fallback, "between min_replicas and max_replicas")
    if not _URL.match(args.prometheus_server_address):
        raise InvalidInput(
            "prometheus_server_address", args.prometheus_server_address, "an http:// or https:// URL"
        )
    for key, value in args.service_monitor_labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise InvalidInput(
                "service_monitor_labels", {key: value}, "Kubernetes label keys and values (<= 63 characters)"
            )
    _validate_source(args.source)
    if args.canary is not None:
        check_canary(args.canary, args.models)
    if isinstance(args.log_verbose, bool) or args.log_verbose not in TRITON_LOG_BYTES_PER_REQUEST:
        raise InvalidInput(
            "log_verbose", args.log_verbose, "0 (no line per request) or 1 (~1.7 KB a request)"
        )
    if not isinstance(args.request_log, bool):
        raise InvalidInput("request_log", args.request_log, "true or false")
    if args.tracing is not None:
        try:
            check_field_types(args.tracing)
            tracing_args(name, args)
        except InvalidInput as error:
            raise InvalidInput(f"tracing.{error.field}", error.value, error.allowed) from None


def check_model_cache(args: TritonModelServiceArgs) -> None:
    """The node cache holds at least what one pod serves; the fill's wait for a manifest is bounded."""
    if not args.node_cache_gib >= model_cache_gib(args):
        raise InvalidInput(
            "node_cache_gib",
            args.node_cache_gib,
            f">= model_cache_gib ({model_cache_gib(args):g}): the node cache holds every file a pod serves",
        )
    if isinstance(args.manifest_wait_s, bool) or not isinstance(args.manifest_wait_s, int):
        raise InvalidInput("manifest_wait_s", args.manifest_wait_s, "a whole number of seconds")
    if not 0 <= args.manifest_wait_s <= 3600:
        raise InvalidInput("manifest_wait_s", args.manifest_wait_s, "0 to 3600 seconds")
