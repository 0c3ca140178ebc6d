"""The AWS regions a stack may name: a pattern alone lets ``us-east-9`` through, and then every price,
zone and endpoint is a guess. Commercial, GovCloud and China partitions, as AWS lists them (2026)."""

from __future__ import annotations

from inferstack.infra.errors import InvalidInput

REGIONS = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "cn-north-1",
        "cn-northwest-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-gov-east-1",
        "us-gov-west-1",
        "us-west-1",
        "us-west-2",
    }
)


def check_region(field: str, region: object) -> str:
    """``region`` if AWS has it, else InvalidInput naming ``field``."""
    if not isinstance(region, str) or region not in REGIONS:
        raise InvalidInput(
            field, region, "an AWS region such as us-east-1 or eu-west-1 (see infra/regions.py)"
        )
    return region
