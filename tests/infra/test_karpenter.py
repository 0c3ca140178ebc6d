"""The AWS side of Karpenter against what Karpenter's documentation requires (the getting-started
CloudFormation template: controller policy statements, interruption queue, its policy and the four
EventBridge rules), evaluated where it matters: what the controller may do to this cluster's instances
and to anything else, who may send to the queue, and where each event goes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.infra.interruptions import INTERRUPTION_EVENTS
from inferstack.infra.karpenter import (
    QUEUE_RETENTION_SECONDS,
    controller_policy,
    queue_policy,
    validate_names,
)
from inferstack.policies.rules import QUEUE, QUEUE_POLICY, interruption_queue_scoped
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recording
from tests.infra.iam import allowed

CLUSTER = "inferstack-prod"
REGION, ACCOUNT = "us-east-1", "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{CLUSTER}"
NODE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/{CLUSTER}-karpenter-node-abc1234"
EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
# The statements of Karpenter's documented controller policy (website/content/en/preview/getting-started/
# getting-started-with-karpenter/cloudformation.yaml). The instance-profile writers are left out on
# purpose: the stack makes the profile and the EC2NodeClass names it, so Karpenter never creates one.
DOCUMENTED_SIDS = {
    "AllowScopedEC2InstanceAccessActions",
    "AllowScopedEC2LaunchTemplateAccessActions",
    "AllowScopedEC2InstanceActionsWithTags",
    "AllowScopedResourceCreationTagging",
    "AllowScopedResourceTagging",
    "AllowScopedDeletion",
    "AllowRegionalReadActions",
    "AllowSSMReadActions",
    "AllowPricingReadActions",
    "AllowInterruptionQueueActions",
    "AllowPassingInstanceRole",
    "AllowInstanceProfileReadActions",
    "AllowAPIServerEndpointDiscovery",
}
# Karpenter's documented EventBridge rules: (source, detail-type).
DOCUMENTED_EVENTS = {
    ("aws.health", "AWS Health Event"),
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("aws.ec2", "EC2 Instance State-change Notification"),
}


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return controller_policy(
        cluster_name=CLUSTER,
        partition="aws",
        region=REGION,
        account_id=ACCOUNT,
        queue_arn=QUEUE_ARN,
        node_role_arn=NODE_ROLE,
    )


@pytest.fixture(scope="module")
def prod() -> Recording:
    return offline.run_stack(ROOT / "stacks", "prod", {**DEPLOYER, "inferstack:capacity": "karpenter"})


def launch_tags(cluster: str = CLUSTER, **extra: str) -> dict[str, Any]:
    """The request tags Karpenter puts on what it launches."""
    return {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
        "aws:RequestTag/karpenter.sh/nodepool": "gpu-spot",
        "aws:RequestTag/eks:eks-cluster-name": cluster,
        "aws:RequestedRegion": REGION,
        **extra,
    }


def test_the_policy_has_karpenters_documented_statements(policy: dict[str, Any]) -> None:
    assert {s["Sid"] for s in policy["Statement"]} == DOCUMENTED_SIDS


def test_it_launches_only_what_it_tags_as_this_clusters(policy: dict[str, Any]) -> None:
    instance = f"{EC2}:instance/i-0123"
    assert allowed(policy, "ec2:RunInstances", instance, launch_tags())
    assert allowed(policy, "ec2:CreateFleet", f"{EC2}:fleet/fleet-1", launch_tags())
    assert not allowed(policy, "ec2:RunInstances", instance, launch_tags("other-cluster"))
    untagged = {k: v for k, v in launch_tags().items() if "nodepool" not in k}
    assert not allowed(policy, "ec2:RunInstances", instance, untagged)
    # The AMI, subnet and security group it launches with need no tag; other regions are out.
    assert allowed(policy, "ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-1")
    assert not allowed(policy, "ec2:RunInstances", "arn:aws:ec2:eu-west-1::image/ami-1")
    tagging = {**launch_tags(), "ec2:CreateAction": "RunInstances"}
    assert allowed(policy, "ec2:CreateTags", instance, tagging)
    assert not allowed(policy, "ec2:CreateTags", instance, {**tagging, "ec2:CreateAction": "CreateVolume"})


def test_it_terminates_only_this_clusters_karpenter_nodes(policy: dict[str, Any]) -> None:
    ours = {
        f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned",
        "aws:ResourceTag/karpenter.sh/nodepool": "gpu-spot",
    }
    instance = f"{EC2}:instance/i-0123"
    assert allowed(policy, "ec2:TerminateInstances", instance, ours)
    # A managed node group's instance (no nodepool tag) and another cluster's are out of reach.
    managed = {f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned"}
    assert not allowed(policy, "ec2:TerminateInstances", instance, managed)
    other = {
        "aws:ResourceTag/kubernetes.io/cluster/other": "owned",
        "aws:ResourceTag/karpenter.sh/nodepool": "x",
    }
    assert not allowed(policy, "ec2:TerminateInstances", instance, other)
    # After launch it may name its node claim, and nothing else.
    assert allowed(
        policy, "ec2:CreateTags", instance, {**ours, "aws:TagKeys": ["karpenter.sh/nodeclaim", "Name"]}
    )
    assert not allowed(
        policy, "ec2:CreateTags", instance, {**ours, "aws:TagKeys": [f"kubernetes.io/cluster/{CLUSTER}"]}
    )


def test_it_passes_only_its_node_role_and_reads_only_its_queue_and_cluster(policy: dict[str, Any]) -> None:
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allowed(policy, "iam:PassRole", NODE_ROLE, to_ec2)
    assert not allowed(policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/{CLUSTER}-cluster", to_ec2)
    assert not allowed(policy, "iam:PassRole", NODE_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"})
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"):
        assert allowed(policy, action, QUEUE_ARN)
        assert not allowed(policy, action, f"arn:aws:sqs:{REGION}:{ACCOUNT}:another-queue")
    assert not allowed(policy, "sqs:SendMessage", QUEUE_ARN)
    assert allowed(policy, "eks:DescribeCluster", f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}")
    assert not allowed(policy, "eks:DescribeCluster", f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/other")
    for action in ("iam:CreateInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:DeleteInstanceProfile"):
        assert not allowed(policy, action, "*", launch_tags())
    read = {"aws:RequestedRegion": REGION}
    assert allowed(policy, "ec2:DescribeCapacityReservations", "*", read)  # reserved capacity
    assert not allowed(policy, "ec2:DescribeInstances", "*", {"aws:RequestedRegion": "eu-west-1"})


def test_the_recorded_policy_is_the_documented_one_for_this_stack(
    prod: Recording, policy: dict[str, Any]
) -> None:
    (recorded,) = [
        p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("karpenter-controller")
    ]
    document = json.loads(recorded.inputs["policy"])
    (queue,) = prod.of_type("aws:sqs/queue:Queue")
    (sqs,) = [s for s in document["Statement"] if s["Sid"] == "AllowInterruptionQueueActions"]
    assert sqs["Resource"].endswith(queue.name) and queue.urn in recorded.property_dependencies["policy"]
    assert {s["Sid"] for s in document["Statement"]} == {s["Sid"] for s in policy["Statement"]}
    (role,) = [
        r for r in prod.of_type("aws:iam/role:Role") if r.urn in recorded.property_dependencies["role"]
    ]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert (
        next(iter(trust["Condition"]["StringEquals"].values()))
        == "system:serviceaccount:kube-system:karpenter"
    )


def test_the_queue_is_encrypted_and_short_lived(prod: Recording) -> None:
    (queue,) = prod.of_type("aws:sqs/queue:Queue")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert queue.inputs["messageRetentionSeconds"] == QUEUE_RETENTION_SECONDS == 300
    assert queue.inputs["name"] == CLUSTER
    assert interruption_queue_scoped(QUEUE, queue.inputs, {}) == []
    assert interruption_queue_scoped(QUEUE, {**queue.inputs, "sqsManagedSseEnabled": False}, {})


SENDERS = {"senders": ["events.amazonaws.com", "sqs.amazonaws.com"]}


def test_only_eventbridge_and_sqs_may_send_and_only_over_tls(prod: Recording) -> None:
    (recorded,) = prod.of_type("aws:sqs/queuePolicy:QueuePolicy")
    (queue,) = prod.of_type("aws:sqs/queue:Queue")
    assert queue.urn in recorded.property_dependencies["policy"]
    document = json.loads(recorded.inputs["policy"])
    assert document == queue_policy(document["Statement"][0]["Resource"])
    (send,) = [s for s in document["Statement"] if s["Effect"] == "Allow"]
    assert send["Principal"] == {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]}
    assert send["Action"] == "sqs:SendMessage"
    assert not allowed(document, "sqs:SendMessage", send["Resource"], {"aws:SecureTransport": "false"})
    assert allowed(document, "sqs:SendMessage", send["Resource"], {"aws:SecureTransport": "true"})
    assert interruption_queue_scoped(QUEUE_POLICY, recorded.inputs, SENDERS) == []
    for stranger in ("*", {"AWS": "*"}, {"Service": ["events.amazonaws.com", "lambda.amazonaws.com"]}):
        widened = {**send, "Principal": stranger}
        problems = interruption_queue_scoped(
            QUEUE_POLICY, {"policy": json.dumps(queue_policy("q") | {"Statement": [widened]})}, SENDERS
        )
        assert problems and "only" in problems[0], stranger


def test_the_four_documented_events_reach_the_queue_after_its_policy(prod: Recording) -> None:
    rules = prod.of_type("aws:cloudwatch/eventRule:EventRule")
    patterns = {json.dumps(json.loads(r.inputs["eventPattern"]), sort_keys=True): r for r in rules}
    documented = {
        json.dumps({"detail-type": [d], "source": [s]}, sort_keys=True) for s, d in DOCUMENTED_EVENTS
    }
    assert set(patterns) == documented and {(s, d) for _, s, d in INTERRUPTION_EVENTS} == DOCUMENTED_EVENTS
    (queue,) = prod.of_type("aws:sqs/queue:Queue")
    (queue_access,) = prod.of_type("aws:sqs/queuePolicy:QueuePolicy")
    targets = prod.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 4
    for target in targets:
        assert target.property_dependencies["arn"] == (queue.urn,)
        (rule_urn,) = target.property_dependencies["rule"]
        assert rule_urn in {r.urn for r in rules}
        assert queue_access.urn in target.dependencies  # EventBridge may send before the first event
    (controller,) = [
        r for r in prod.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"].endswith("/karpenter")
    ]
    assert controller.inputs["values"]["settings"]["interruptionQueue"] == queue.inputs["name"]


def test_names_that_do_not_fit_are_refused_before_anything_is_registered() -> None:
    with pytest.raises(InvalidInput, match="name"):
        validate_names("x" * 60, "c")
    with pytest.raises(InvalidInput, match="interruption queue"):
        validate_names("p", "c" * 81)


def test_nodes_launch_with_the_clusters_volume_key_which_the_controller_may_use(prod: Recording) -> None:
    """As the managed groups' disks: a customer-managed default EBS key would otherwise fail every launch."""
    (key,) = [k for k in prod.of_type("aws:kms/key:Key") if k.name.endswith("-volumes")]
    classes = prod.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
    assert classes
    for node_class in classes:
        (disk,) = node_class.inputs["spec"]["blockDeviceMappings"]
        assert disk["ebs"]["kmsKeyID"].endswith(f":kms:us-east-1:123456789012:{key.name}")
        assert key.urn in node_class.property_dependencies["spec"]
    (uses,) = [
        p
        for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.name.endswith("karpenter-controller-volume-key")
    ]
    document = json.loads(uses.inputs["policy"])
    assert {s["Sid"] for s in document["Statement"]} == {"GrantForVolumes", "UseVolumeKey"}
    assert key.urn in uses.property_dependencies["policy"]
