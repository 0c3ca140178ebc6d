"""InferencePlatform: one environment of GPU model serving, as one Pulumi component.

network -> cluster -> node groups (system, GPU on demand, GPU spot) -> model store -> telemetry (traces
and logs), GPU operators, monitoring, autoscaling -> one TritonModelService per configured service,
traced to the telemetry's collector. The whole `PlatformConfig`
is checked before the first resource is registered, and every error names the stack config key.

The modules: ``args`` (the stack config as each component's args), ``checks`` (every check before the
first resource), ``resource`` (the component).
"""

from inferstack.components.platform.args import node_plans, service_args
from inferstack.components.platform.checks import check
from inferstack.components.platform.resource import InferencePlatform

__all__ = ["InferencePlatform", "check", "node_plans", "service_args"]
