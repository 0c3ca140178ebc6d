"""The platform in a second region: the components take the AWS provider from their options, and
every invoke (zones, partition, account) goes through it."""

import pulumi
import pulumi_aws as aws

from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import PlatformConfig

config = PlatformConfig.model_validate(
    {
        "environment": "staging",
        "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
        "services": [{"name": "ranker", "models": ["ranker"], "prefix": "ranker"}],
    }
)
ireland = aws.Provider("eu-west-1", region="eu-west-1")
platform = InferencePlatform("ml-eu", config, pulumi.ResourceOptions(provider=ireland))
pulumi.export("region", platform.region)
pulumi.export("zones", platform.zones)
