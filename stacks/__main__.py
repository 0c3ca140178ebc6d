"""The inferstack Pulumi program: `pulumi up -s dev|staging|prod` (stack files beside this one)."""

from __future__ import annotations

import pulumi
from platform_stack import build, parse_config

config = pulumi.Config("inferstack")
raw = {key: config.get_object(key) for key in ("cluster", "network", "nodes", "gpu", "services", "failover")}
raw["environment"] = config.get("environment")
outputs = build(parse_config({k: v for k, v in raw.items() if v is not None}, stack=pulumi.get_stack()))
for name, value in outputs.items():
    pulumi.export(
        name, pulumi.Output.secret(value) if name in ("kubeconfig", "grafana_admin_password") else value
    )
