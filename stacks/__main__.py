"""The inferstack Pulumi program: `pulumi up -s dev|staging|prod|prod-dr` (stack files beside this one)."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import engine_config, parse_config
from inferstack.infra.aws_identity import identity as aws_identity
from inferstack.stacks.failover_stack import build_failover, check_failover, inherited_settings

engine = engine_config()
config = parse_config(engine)
identity = aws_identity(engine)  # the kubeconfig's token is got as the provider's own identity
if config.failover:  # a standby stack: its pairing is checked before anything is registered
    services = [s.name for s in config.services]
    check_failover(config.failover, region=aws.get_region().region, services=services)
    regional_settings = inherited_settings(engine)
platform = InferencePlatform(
    config.cluster.name or f"inferstack-{pulumi.get_stack()}",
    config,
    identity=identity,
    stack_dir=Path(__file__).resolve().parent,  # the stack files' folder (Pulumi.yaml's stackConfigDir)
)
for name, value in platform.outputs().items():
    pulumi.export(name, value)
if config.failover:
    pulumi.export(
        "failover",
        build_failover(
            config.failover,
            region=platform.region,
            store=platform.model_store,
            triton=platform.services[config.failover.service],
            provider=platform.cluster.provider,
            aws_settings=regional_settings,
        ),
    )
