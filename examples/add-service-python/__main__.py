"""One more model service on a platform another stack runs, read through a stack reference: its own
IRSA role reads its own prefix of the platform's bucket.

    pulumi config set platformStack my-org/inferstack/prod
"""

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from inferstack.components.model_service import ModelSource, TritonModelService, TritonModelServiceArgs
from inferstack.infra.irsa import service_account_role
from inferstack.infra.model_store import reader_policy

NAME, PREFIX = "reranker", "reranker"
platform = pulumi.StackReference(pulumi.Config().require("platformStack"))
bucket = platform.require_output("model_bucket")
cluster = k8s.Provider("platform", kubeconfig=platform.require_output("kubeconfig"))

role = service_account_role(
    f"{NAME}-models",
    oidc_provider_arn=platform.require_output("oidc_provider_arn"),
    oidc_issuer_url=platform.require_output("oidc_issuer_url"),
    namespace=NAME,
    service_account=NAME,
)
partition = aws.get_partition().partition
aws.iam.RolePolicy(
    f"{NAME}-models",
    role=role.id,
    policy=bucket.apply(lambda name: json.dumps(reader_policy(f"arn:{partition}:s3:::{name}", PREFIX))),
)
service = TritonModelService(
    NAME,
    TritonModelServiceArgs(
        models=["reranker"],
        source=ModelSource(
            role_arn=role.arn, repository_uri=pulumi.Output.concat("s3://", bucket, f"/{PREFIX}")
        ),
        zones=3,
        cluster_has_crds=True,  # the platform stack installed kube-prometheus-stack and KEDA
    ),
    pulumi.ResourceOptions(provider=cluster),
)
pulumi.export("reranker", service.http_endpoint)
