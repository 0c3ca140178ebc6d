"""The resource rules of inferstack's policy pack, as pure functions over engine-form properties.

Each rule takes a resource's type token, its properties as the Analyzer receives them (camelCase,
plain dicts and lists: the pack converts pulumi-policy's proxies first) and the rule's config (its
schema's defaults overlaid with the pack config of the stack), and returns one message per violation.
Only pure tables of inferstack are imported here: the Analyzer process must never register resources.
The rules live by concern in ``rules_cluster`` and ``rules_workloads``; their readers in ``rule_base``.
"""

from __future__ import annotations

from inferstack.policies.rule_base import Rule
from inferstack.policies.rules_cluster import (
    eks_audit_logs,
    eks_endpoint_restricted,
    eks_secrets_kms,
    encrypted_volumes,
    gpu_max_bounded,
    gpu_min_zero,
    gpu_nodes_tainted,
    imds_v2_hop_limit_1,
    pinned_charts,
    pinned_images,
    spot_diversified,
)
from inferstack.policies.rules_workloads import (
    gpu_workloads_scheduled,
    interruption_queue_scoped,
    karpenter_disruption_bounded,
    logs_scoped,
    no_static_aws_keys,
    spot_safe_drain,
    triton_admin_restricted,
    triton_non_root_read_only,
    triton_probes,
)

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
