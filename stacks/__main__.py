"""The inferstack Pulumi program: `pulumi up -s dev|staging|prod` (stack files beside this one)."""

from __future__ import annotations

import pulumi

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import engine_config, parse_config

config = parse_config(engine_config())
platform = InferencePlatform(config.cluster.name or f"inferstack-{pulumi.get_stack()}", config)
for name, value in platform.outputs().items():
    pulumi.export(name, value)
