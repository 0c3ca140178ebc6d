"""TritonModelService: one Triton model service on EKS as a typed Pulumi resource.

Defaults are the ones an operator would choose: the service reads its models from S3 through IRSA
(no keys), spreads over zones so losing one leaves it up, drains in-flight requests within the
two-minute spot notice, scales on Triton's queue time and pending requests through KEDA (falling
back to a fixed size when Prometheus cannot be read), and keeps a disruption budget that survives
a zone loss on top of voluntary disruptions. Triton's HTTP port is on loopback behind a request front
(``components/request_front.py``) that refuses what would crash Triton before Triton sees it, and Triton's
admin APIs (model repository, shared memory, trace, logging) answer only callers with the service's key.

Every manifest is a pure function of the validated args; the component only turns them into resources.
The modules, each with its own reason to change: ``args`` (what the service is given and the arithmetic
derived from it), ``checks`` (validation), ``pod`` (the pod, its front and identity), ``endpoints``
(Services), ``scaling`` (ServiceMonitor, ScaledObject, disruption budget), ``resource`` (the component).
"""

from inferstack.components.admin_api import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER
from inferstack.components.model_service.args import (
    TRITON_IMAGE,
    ModelSource,
    TritonModelServiceArgs,
    fullest_zone,
    grace_period_s,
    namespace_of,
    prod_min_replicas,
    progress_deadline_s,
)
from inferstack.components.model_service.checks import validate
from inferstack.components.model_service.endpoints import headless_service, service
from inferstack.components.model_service.pod import (
    GRPC_PORT,
    HEALTH_READY,
    HTTP_PORT,
    METRICS_PORT,
    deployment,
    labels,
)
from inferstack.components.model_service.resource import TritonModelService
from inferstack.components.model_service.scaling import pod_disruption_budget, scaled_object, service_monitor

__all__ = [
    "ADMIN_KEY_HEADER",
    "GRPC_ADMIN_KEY_HEADER",
    "GRPC_PORT",
    "HEALTH_READY",
    "HTTP_PORT",
    "METRICS_PORT",
    "TRITON_IMAGE",
    "ModelSource",
    "TritonModelService",
    "TritonModelServiceArgs",
    "deployment",
    "fullest_zone",
    "grace_period_s",
    "headless_service",
    "labels",
    "namespace_of",
    "pod_disruption_budget",
    "prod_min_replicas",
    "progress_deadline_s",
    "scaled_object",
    "service",
    "service_monitor",
    "validate",
]
