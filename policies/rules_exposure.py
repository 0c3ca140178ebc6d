"""Nothing public by accident: a LoadBalancer Service that faces the internet names who may reach it.

On AWS a ``type: LoadBalancer`` Service is internet-facing unless an annotation says internal (the
in-tree cloud provider's and the AWS Load Balancer Controller's); without ``loadBalancerSourceRanges``
(or the ``service.beta.kubernetes.io/load-balancer-source-ranges`` annotation) the controller opens
it to 0.0.0.0/0. Naming 0.0.0.0/0 on purpose is allowed: the mistake refused is saying nothing.
"""

from __future__ import annotations

from typing import Any

from inferstack.policies.rule_base import Config, Props, Rule

SERVICE = "kubernetes:core/v1:Service"
_AWS_LB = "service.beta.kubernetes.io/aws-load-balancer"
RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"


def internet_facing(metadata: dict[str, Any]) -> bool:
    annotations = metadata.get("annotations") or {}
    if str(annotations.get(f"{_AWS_LB}-internal", "")).lower() in ("true", "0.0.0.0/0"):
        return False
    return str(annotations.get(f"{_AWS_LB}-scheme", "internet-facing")) != "internal"


def public_load_balancer_ranges(resource_type: str, props: Props, config: Config) -> list[str]:
    """An internet-facing LoadBalancer Service names its source ranges."""
    spec = props.get("spec") or {}
    metadata = props.get("metadata") or {}
    if resource_type != SERVICE or spec.get("type") != "LoadBalancer" or not internet_facing(metadata):
        return []
    if spec.get("loadBalancerSourceRanges") or (metadata.get("annotations") or {}).get(RANGES_ANNOTATION):
        return []
    name = f"{metadata.get('namespace', 'default')}/{metadata.get('name')}"
    return [
        f"Service {name} is an internet-facing load balancer without loadBalancerSourceRanges: "
        "open to 0.0.0.0/0; name the clients' ranges (or mark it internal)"
    ]


EXPOSURE_RULES: tuple[Rule, ...] = (
    Rule(
        "public-load-balancer-ranges",
        "An internet-facing LoadBalancer Service names its source ranges.",
        "mandatory",
        public_load_balancer_ranges,
    ),
)
