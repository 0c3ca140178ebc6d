"""Where alerts go: the operator's receivers, and which severities each one gets.

Alertmanager's route tree, made from a table: each severity (P0, P1, P2) names its receivers; a
severity's routes ``continue`` so every receiver named gets it. The Watchdog (kube-prometheus-stack's
always-firing dead man's switch) is matched first and goes to ``null``: it must never page anybody.
Anything else falls to ``null`` too: a chart's own warning is not a page unless a tier says so.

Receivers are SNS topics (published with the Alertmanager pod's IAM role, SigV4), PagerDuty (Events
API v2 routing key) and webhooks: Slack-compatible (``slack_configs``, which also speaks to
Mattermost and Rocket.Chat incoming webhooks) or plain (``webhook_configs``). Routing keys and
webhook URLs are credentials: they come from Pulumi secret config and the resource code carries the
rendered config as a secret, so neither the plan nor the state shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferstack.infra.errors import InvalidInput

SEVERITIES = ("P0", "P1", "P2")
NULL = "null"
WATCHDOG = "Watchdog"


@dataclass(frozen=True)
class Receiver:
    """Exactly one of ``sns_topic_arn``, ``pagerduty_routing_key`` or ``webhook_url``."""

    name: str
    sns_topic_arn: str | None = None
    pagerduty_routing_key: str | None = None
    webhook_url: str | None = None
    slack_channel: str | None = None  # with a webhook URL: speak Slack's incoming-webhook format

    @property
    def holds_secret(self) -> bool:
        return self.pagerduty_routing_key is not None or self.webhook_url is not None


@dataclass(frozen=True)
class AlertRouting:
    """The receivers, and which of them each severity reaches."""

    receivers: Sequence[Receiver] = ()
    by_severity: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def sns_topic_arns(self) -> list[str]:
        return [r.sns_topic_arn for r in self.receivers if r.sns_topic_arn is not None]


def check_routing(routing: AlertRouting, key: str) -> None:
    """One line per mistake, naming the stack key (``key`` is where the routing came from)."""
    names = [r.name for r in routing.receivers]
    for i, receiver in enumerate(routing.receivers):
        where = f"{key}.receivers[{i}]"
        if not receiver.name or receiver.name == NULL or names.count(receiver.name) > 1:
            raise InvalidInput(f"{where}.name", receiver.name, f"a unique name other than {NULL!r}")
        kinds = [receiver.sns_topic_arn, receiver.pagerduty_routing_key, receiver.webhook_url]
        if sum(k is not None for k in kinds) != 1:
            raise InvalidInput(
                where, receiver.name, "exactly one of snsTopicArn, pagerdutyRoutingKey or webhookUrl"
            )
        if receiver.sns_topic_arn is not None and not _topic_region(receiver.sns_topic_arn):
            raise InvalidInput(
                f"{where}.snsTopicArn", receiver.sns_topic_arn, "arn:aws:sns:<region>:<account>:<topic>"
            )
        if receiver.webhook_url is not None and not receiver.webhook_url.startswith("https://"):
            raise InvalidInput(f"{where}.webhookUrl", "(secret)", "an https:// URL")
        if receiver.slack_channel is not None and receiver.webhook_url is None:
            raise InvalidInput(f"{where}.slackChannel", receiver.slack_channel, "only with a webhookUrl")
    for severity, targets in routing.by_severity.items():
        if severity not in SEVERITIES:
            raise InvalidInput(f"{key}.{severity.lower()}", severity, f"one of {', '.join(SEVERITIES)}")
        for target in targets:
            if target not in names:
                raise InvalidInput(
                    f"{key}.{severity.lower()}", target, f"a receiver name: {', '.join(names)}"
                )


def _topic_region(arn: str) -> str | None:
    parts = arn.split(":")
    return (
        parts[3]
        if len(parts) == 6 and parts[:3] in (["arn", "aws", "sns"], ["arn", "aws-cn", "sns"])
        else None
    )


def receiver_config(receiver: Receiver) -> dict[str, Any]:
    """One Alertmanager receiver (its ``receivers[]`` entry)."""
    if receiver.sns_topic_arn is not None:
        sns = {
            "topic_arn": receiver.sns_topic_arn,
            "sigv4": {"region": _topic_region(receiver.sns_topic_arn)},  # the pod's IRSA credentials
            "send_resolved": True,
        }
        return {"name": receiver.name, "sns_configs": [sns]}
    if receiver.pagerduty_routing_key is not None:
        pager = {"routing_key": receiver.pagerduty_routing_key, "send_resolved": True}
        return {"name": receiver.name, "pagerduty_configs": [pager]}
    if receiver.slack_channel is not None:
        slack = {"api_url": receiver.webhook_url, "channel": receiver.slack_channel, "send_resolved": True}
        return {"name": receiver.name, "slack_configs": [slack]}
    return {"name": receiver.name, "webhook_configs": [{"url": receiver.webhook_url, "send_resolved": True}]}


def routes(routing: AlertRouting) -> list[dict[str, Any]]:
    """The child routes under the root: Watchdog to null and stop, then each severity's receivers."""
    found: list[dict[str, Any]] = [{"receiver": NULL, "matchers": [f'alertname = "{WATCHDOG}"']}]
    for severity in SEVERITIES:
        for target in routing.by_severity.get(severity, ()):
            found.append({"receiver": target, "matchers": [f'severity = "{severity}"'], "continue": True})
    return found


def receivers(routing: AlertRouting) -> list[dict[str, Any]]:
    return [{"name": NULL}, *(receiver_config(r) for r in routing.receivers)]


def sns_publish_policy(topic_arns: Sequence[str]) -> dict[str, Any]:
    """What the Alertmanager pod's role may do: publish to the configured topics, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": sorted(topic_arns)}],
    }
