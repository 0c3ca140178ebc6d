"""The components the provider serves to TypeScript, Go, .NET, Java and YAML programs.

Each is a thin shell over the Python component of the same name: it receives its args as a plain dict
(the SDK maps schema names to the Python keys), turns them into the typed args the Python API takes,
and registers that component as its child, so every check and default is the Python API's own.
"""

# The SDK's analyzer reads these annotations at run time: no ``from __future__ import annotations``.
from typing import Any, TypedDict

import pulumi

from inferstack.components import model_service, platform
from inferstack.components.platform_config import validate_config
from inferstack.provider.args import PlatformArgs
from inferstack.provider.generate import from_args


class InferencePlatform(pulumi.ComponentResource):
    """The whole platform of one environment: a multi-AZ EKS cluster with on-demand and spot GPU
    capacity, the GPU, monitoring, autoscaling and telemetry layer, the model bucket and one Triton
    service per entry of ``services``. The args are the stack config's keys, with its defaults."""

    cluster_name: pulumi.Output[str]
    """The EKS cluster's name."""
    kubeconfig: pulumi.Output[str]
    """A kubeconfig for the cluster (a secret)."""
    oidc_provider_arn: pulumi.Output[str]
    """The cluster's IAM OIDC provider, for IRSA roles of your own."""
    vpc_id: pulumi.Output[str]
    """The VPC the cluster runs in."""
    model_bucket: pulumi.Output[str]
    """The S3 bucket each service reads its models from (one prefix per service)."""

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        config = validate_config(from_args(dict(args)))
        super().__init__("inferstack:index:InferencePlatform", name, {}, opts)
        built = platform.InferencePlatform(name, config, pulumi.ResourceOptions(parent=self))
        self.cluster_name = built.cluster_name
        self.kubeconfig = pulumi.Output.secret(built.kubeconfig)
        self.oidc_provider_arn = built.oidc_provider_arn
        self.vpc_id = built.vpc_id
        self.model_bucket = built.model_bucket
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "kubeconfig": self.kubeconfig,
                "oidc_provider_arn": self.oidc_provider_arn,
                "vpc_id": self.vpc_id,
                "model_bucket": self.model_bucket,
            }
        )


class TritonModelServiceArgs(TypedDict, total=False):
    """One Triton service on a cluster you already have (the Kubernetes provider comes in the options),
    reading its models with an IAM role you give it."""

    models: list[str]
    """Triton model names to load (a list, even of one). Required."""
    role_arn: str
    """An IRSA role that can read the repository (trusts the cluster's OIDC provider). Required."""
    repository_uri: str
    """The s3:// URI of the model repository. Required."""
    zones: int
    """How many zones the cluster's GPU nodes span: replicas spread over them. Required."""
    environment: str
    """prod (zone-loss and disruption checks) or dev. Default: prod."""
    namespace: str
    """The namespace; default: the service's own, named after it."""
    region: str
    """The model bucket's region; default: that of the AWS provider in the options."""
    node_instance_type: str
    """The GPU instance type the pods are sized for. Default: g5.xlarge."""
    placement: str
    """on-demand, spot or spot-with-fallback. Default: spot-with-fallback."""
    min_replicas: int
    """Replicas at least. Default: 3."""
    max_replicas: int
    """Replicas at most. Default: 12."""
    cluster_has_crds: bool
    """True where the cluster already has the ServiceMonitor, PrometheusRule and ScaledObject CRDs
    (an InferencePlatform, or kube-prometheus-stack and KEDA installed otherwise). Required: true."""


class TritonModelService(pulumi.ComponentResource):
    """Triton serving ``models`` from S3 behind a request front, spread over zones, scaled by KEDA on
    queue time and pending requests, with its ServiceMonitor, alerts and disruption budget."""

    http_endpoint: pulumi.Output[str]
    """The in-cluster HTTP endpoint (through the request front)."""
    grpc_endpoint: pulumi.Output[str]
    """The in-cluster gRPC endpoint (one DNS record per ready pod)."""
    namespace: pulumi.Output[str]
    """The namespace the service runs in."""

    def __init__(
        self, name: str, args: TritonModelServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # What the SDK hands over is a plain dict, as given; the typed args check every value.
        given: dict[str, Any] = dict(args)
        typed = model_service.TritonModelServiceArgs(
            models=given.pop("models", []),
            source=model_service.ModelSource(
                role_arn=given.pop("role_arn", None), repository_uri=given.pop("repository_uri", None)
            ),
            zones=given.pop("zones", 0),
            **given,
        )
        super().__init__("inferstack:index:TritonModelService", name, {}, opts)
        built = model_service.TritonModelService(name, typed, pulumi.ResourceOptions(parent=self))
        self.http_endpoint = pulumi.Output.from_input(built.http_endpoint)
        self.grpc_endpoint = pulumi.Output.from_input(built.grpc_endpoint)
        self.namespace = pulumi.Output.from_input(built.namespace)
        self.register_outputs(
            {
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "namespace": self.namespace,
            }
        )
