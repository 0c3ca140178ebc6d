"""The stack rules of inferstack's policy pack: checks no single resource can answer.

Each takes every resource of the stack (engine-form properties as plain data, and the URNs each one
is ordered after) and the rule's config, and returns (message, urn) violations; an empty URN
blames the stack as a whole. Pure: the pack adapts pulumi-policy's PolicyResource to
StackResource, and the tests send the same resources through the real Analyzer. The rules live
by concern in stack_access and stack_capacity; the stack they read in stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferstack.policies.awaits import await_covers_wait
from inferstack.policies.pod_references import pods_wait_for_references
from inferstack.policies.rule_base import (
    Config,
    RuleBase,
)
from inferstack.policies.scale_from_zero import node_template_fits
from inferstack.policies.stack import Stack, Violation
from inferstack.policies.stack_access import (
    crd_ordered,
    deployable,
    irsa_one_prefix,
    s3_public_access_blocked,
    s3_tls_only,
)
from inferstack.policies.stack_capacity import (
    gpu_capacity,
    karpenter_interruptions,
    model_service_complete,
    scaled_object_covers_zones,
    zone_loss,
    zones,
)


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
