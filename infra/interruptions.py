"""The EC2 and AWS Health events Karpenter acts on, as EventBridge matches them: (rule suffix, source,
detail-type), from Karpenter's documented CloudFormation. Pure data: the stack creates a rule for each
(``infra/karpenter.py``) and the policy pack checks that all of them reach the controller's queue."""

from __future__ import annotations

INTERRUPTION_EVENTS: tuple[tuple[str, str, str], ...] = (
    ("spot-interruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("instance-state-change", "aws.ec2", "EC2 Instance State-change Notification"),
    ("scheduled-change", "aws.health", "AWS Health Event"),
)
