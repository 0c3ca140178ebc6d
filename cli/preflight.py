"""`inferstack preflight`: what a stack's first `pulumi up` needs of the AWS account, asked read-only
with the deployer's credentials (the stack's own aws:profile and role) before anything is created."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferstack.cli.options import Config, Stack, StacksDir, settings
from inferstack.cli.output import brief_error, error, print_table
from inferstack.infra.errors import InvalidInput

if TYPE_CHECKING:
    from inferstack.components.platform_config import PlatformConfig
    from inferstack.infra.aws_identity import AwsIdentity
    from inferstack.infra.node_plans import NodeGroupPlan
    from inferstack.infra.preflight import Clients, Target

# How a verdict reads in the table (coloured on a terminal by cli.output).
SHOWN = {"pass": "pass", "warn": "warn", "fail": "FAIL"}


def groups(config: PlatformConfig, zone_count: int) -> list[NodeGroupPlan]:
    """The stack's node groups over ``zone_count`` zones, as the program plans them."""
    from inferstack.components.platform import node_plans

    named = config.network.zones if not isinstance(config.network.zones, int) else ()
    return node_plans(config, list(named) or [f"zone-{i + 1}" for i in range(zone_count)])


def target(engine: Mapping[str, Any]) -> Target:
    """What the stack will ask of the account, from its config in engine form."""
    from inferstack.components.platform import node_plans
    from inferstack.components.platform_config import parse_config
    from inferstack.infra.node_plans import GPU_AMI_TYPES
    from inferstack.infra.preflight import Target
    from inferstack.infra.storage import EBS_CSI_ADDON
    from inferstack.infra.versions import AL2023_RELEASE_VERSIONS, EBS_CSI_ADDON_VERSIONS, EKS_ADDON_VERSIONS

    region = engine.get("aws:region")
    if not region:
        raise InvalidInput(
            "aws:region", None, "the stack's region (`pulumi config set aws:region us-east-1`)"
        )
    config = parse_config(engine)
    version = config.cluster.kubernetes_version
    if version not in EKS_ADDON_VERSIONS:
        raise InvalidInput(
            "inferstack:cluster.kubernetesVersion", version, f"one of {', '.join(EKS_ADDON_VERSIONS)}"
        )
    plans = node_plans(config, ["zone-1", "zone-2"])
    flavours = sorted(
        {
            "nvidia" if p.ami_type in GPU_AMI_TYPES else "standard"
            for p in plans
            if p.ami_type.startswith("AL2023")
        }
    )
    return Target(
        region=str(region),
        kubernetes_version=version,
        zones=config.network.zones if isinstance(config.network.zones, int) else tuple(config.network.zones),
        gpu_types=tuple(sorted({t for p in plans if p.gpus_per_node for t in p.instance_types})),
        groups=lambda count: groups(config, count),
        addons={**EKS_ADDON_VERSIONS[version], EBS_CSI_ADDON: EBS_CSI_ADDON_VERSIONS[version]},
        ami_release=AL2023_RELEASE_VERSIONS[version],
        ami_flavours=tuple(flavours),
        hosted_zone=config.failover.zone if config.failover else None,
    )


def session_clients(identity: AwsIdentity, region: str) -> Clients:
    """Clients acting as the stack's identity: its profile, then its role, as the provider does."""
    import boto3

    session = boto3.Session(profile_name=identity.profile, region_name=region)
    if identity.role_arn:
        assumed = session.client("sts").assume_role(
            RoleArn=identity.role_arn, RoleSessionName="inferstack-preflight"
        )
        credentials = assumed["Credentials"]
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region,
        )
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service)  # type: ignore[call-overload]
        return made[service]

    return client


def report(stack: str, region: str, checks: Sequence[Any], as_json: bool) -> int:
    failed = [c for c in checks if c.verdict == "fail"]
    if as_json:
        summary = {
            "stack": stack,
            "region": region,
            "checks": [c.to_json() for c in checks],
            "failed": len(failed),
        }
        print(json.dumps(summary, indent=2))
        return 1 if failed else 0
    print(f"stack {stack}: preflight in {region}, read-only\n")
    print_table(
        [
            ["check", "verdict", "reason", "fix"],
            *([c.name, SHOWN[c.verdict], c.reason, c.fix] for c in checks),
        ]
    )
    warned = sum(c.verdict == "warn" for c in checks)
    print(f"\n{len(failed)} failed, {warned} warning(s), {len(checks) - len(failed) - warned} passed")
    return 1 if failed else 0


def preflight(
    stack: Stack,
    stacks_dir: StacksDir,
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
    config: Config = None,
) -> int:
    """Read-only checks of the AWS account before a stack's first `pulumi up` (exit 0: nothing fails,
    1: a check fails, 2: the checks could not run)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.infra.aws_identity import identity
    from inferstack.infra.preflight import run
    from inferstack.stacks.offline import stack_config, with_settings

    engine = with_settings(stack_config(stacks_dir, stack), settings(config))
    wanted = target(engine)
    try:
        checks = run(wanted, session_clients(identity(engine), wanted.region))
    except (BotoCoreError, ClientError) as failure:  # no credentials, or the identity itself refused
        error(f"preflight could not run: {brief_error(str(failure))}")
        return 2
    return report(stack, wanted.region, checks, as_json)
