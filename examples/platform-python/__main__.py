"""The whole platform in one component: the README's example, as a program."""

import pulumi

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import PlatformConfig

config = PlatformConfig.model_validate(
    {
        "environment": "prod",
        "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
        "network": {"zones": 3},
        "services": [{"name": "ranker", "models": ["ranker"], "prefix": "ranker", "minReplicas": 3}],
    }
)
platform = InferencePlatform("ml-prod", config)
pulumi.export("kubeconfig", platform.kubeconfig)
pulumi.export("ranker", platform.services["ranker"].http_endpoint)
