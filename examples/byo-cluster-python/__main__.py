"""Your own VPC and EKS cluster, made elsewhere: inferstack's lower-level components add the model
bucket, monitoring, autoscaling, the GPU operators and one Triton service to it.

    pulumi config set --secret kubeconfig "$(aws eks update-kubeconfig ... --dry-run)"
    pulumi config set clusterName my-cluster
    pulumi config set oidcProviderArn arn:aws:iam::123456789012:oidc-provider/oidc.eks...
    pulumi config set oidcIssuerUrl https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE
"""

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs
from inferstack.components.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.storage import StorageClasses, StorageClassesArgs
from inferstack.infra.model_store import ModelStore

config = pulumi.Config()
oidc_provider_arn = config.require("oidcProviderArn")
oidc_issuer_url = config.require("oidcIssuerUrl")
cluster = k8s.Provider("cluster", kubeconfig=config.require_secret("kubeconfig"))
on_cluster = pulumi.ResourceOptions(provider=cluster)

store = ModelStore("models")
classes = StorageClasses("storage", StorageClassesArgs(), on_cluster)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(storage_class=classes.gp3),
    pulumi.ResourceOptions(provider=cluster, depends_on=[classes]),
)
after_monitoring = pulumi.ResourceOptions(provider=cluster, depends_on=[monitoring])
GpuOperators("gpu", GpuOperatorsArgs(), after_monitoring)
autoscaling = Autoscaling(
    "autoscaling",
    AutoscalingArgs(
        cluster_name=config.require("clusterName"),
        oidc_provider_arn=oidc_provider_arn,
        oidc_issuer_url=oidc_issuer_url,
    ),
    after_monitoring,
)
ranker = TritonModelService(
    "ranker",
    TritonModelServiceArgs(
        models=["ranker"],
        source=ModelSource(
            model_store=store,
            prefix="ranker",
            oidc_provider_arn=oidc_provider_arn,
            oidc_issuer_url=oidc_issuer_url,
        ),
        zones=3,
    ),
    pulumi.ResourceOptions(provider=cluster, depends_on=[monitoring, autoscaling]),
)
pulumi.export("model_bucket", store.bucket_name)
pulumi.export("ranker", ranker.http_endpoint)
