"""Active/passive across two regions: the model store replicated to the standby, DNS that fails over.

The primary region takes all traffic. Its model bucket replicates every new object version (and
delete marker) to the standby region's bucket, KMS-encrypted objects included, so the standby serves the
same models. Route 53 checks each region's load-balanced Triton endpoint (``/v2/health/ready``) and
answers the service's name with the PRIMARY record while the primary is healthy, the SECONDARY
record once it is not.

Recovery time and point (RTO, RPO): see ``inferstack.infra.failover_timing``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from inferstack.infra.errors import InvalidInput
from inferstack.infra.failover_timing import (
    HEALTH_PATH,
    REPLICATION_TIME_CONTROL_MINUTES,
    FailoverTiming,
    check_timing,
    rpo_s,
)
from inferstack.infra.regions import check_region

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?$")


def check_regions(primary: str, standby: str) -> None:
    for field_name, region in (("primary_region", primary), ("standby_region", standby)):
        check_region(field_name, region)
    if primary == standby:
        raise InvalidInput(
            "standby_region", standby, f"a region other than the primary ({primary}): one outage takes both"
        )


def check_endpoint(field_name: str, endpoint: pulumi.Input[str] | None) -> None:
    """An endpoint is given; where it is already known, it is a DNS name (a load balancer's)."""
    if endpoint is None or endpoint == "":
        raise InvalidInput(field_name, endpoint, "the region's load balancer hostname")
    if isinstance(endpoint, str) and not _HOSTNAME.match(endpoint):
        raise InvalidInput(field_name, endpoint, "a DNS name such as abc.elb.us-east-1.amazonaws.com")


def replication_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }


def replication_policy(
    *,
    source_arn: str,
    destination_arn: str,
    source_key_arn: str,
    destination_key_arn: str,
    source_region: str,
    destination_region: str,
) -> dict[str, Any]:
    """What S3 needs to copy ``source`` into ``destination``, KMS-encrypted objects included.

    Read the source's versions, write replicas into the destination, decrypt with the source's key
    and encrypt with the destination's, each key only when S3 uses it for that bucket (bucket keys
    put the bucket ARN in the encryption context, per-object keys the object ARN).
    """

    def through_s3(region: str, bucket_arn: str) -> dict[str, Any]:
        return {
            "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"]},
        }

    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadSourceConfiguration",
                "Effect": "Allow",
                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                "Resource": source_arn,
            },
            {
                "Sid": "ReadSourceVersions",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObjectVersionForReplication",
                    "s3:GetObjectVersionAcl",
                    "s3:GetObjectVersionTagging",
                ],
                "Resource": f"{source_arn}/*",
            },
            {
                "Sid": "WriteReplicas",
                "Effect": "Allow",
                "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                "Resource": f"{destination_arn}/*",
            },
            {
                "Sid": "DecryptSource",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": source_key_arn,
                "Condition": through_s3(source_region, source_arn),
            },
            {
                "Sid": "EncryptReplicas",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": destination_key_arn,
                "Condition": through_s3(destination_region, destination_arn),
            },
        ],
    }


def replication_time_control(minutes: int) -> dict[str, Any]:
    """S3 Replication Time Control: the replication time it promises and the metrics that report against
    it, which S3 takes only together."""
    return {
        "replication_time": aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeArgs(
            status="Enabled",
            time=aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeTimeArgs(minutes=minutes),
        ),
        "metrics": aws.s3.BucketReplicationConfigRuleDestinationMetricsArgs(
            status="Enabled",
            event_threshold=aws.s3.BucketReplicationConfigRuleDestinationMetricsEventThresholdArgs(
                minutes=minutes
            ),
        ),
    }


@dataclass
class RegionalFailoverArgs:
    """Two regions' model buckets and endpoints; the providers of the regions come with the options."""

    primary_region: str
    standby_region: str
    primary_bucket: pulumi.Input[str]  # bucket names
    standby_bucket: pulumi.Input[str]
    primary_endpoint: pulumi.Input[str]  # each region's load balancer hostname
    standby_endpoint: pulumi.Input[str]
    zone_id: pulumi.Input[str]  # the Route 53 hosted zone of record_name
    record_name: str  # the name clients resolve, such as ranker.models.example.com
    ttl_s: int = 60
    health_check_interval_s: int = 10
    failure_threshold: int = 3
    health_check_port: int = 8000
    health_check_path: str = HEALTH_PATH
    health_check_type: Literal["HTTP", "HTTPS"] = "HTTP"  # HTTPS: Route 53 does not verify the certificate
    replication_time_control: bool = True
    # What the replication waits for: S3 refuses it until both buckets are versioned.
    after: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


def validate(args: RegionalFailoverArgs) -> FailoverTiming:
    check_regions(args.primary_region, args.standby_region)
    check_endpoint("primary_endpoint", args.primary_endpoint)
    check_endpoint("standby_endpoint", args.standby_endpoint)
    if not _HOSTNAME.match(args.record_name):
        raise InvalidInput("record_name", args.record_name, "a DNS name inside the hosted zone")
    if not 1 <= args.health_check_port <= 65535:
        raise InvalidInput("health_check_port", args.health_check_port, "a port from 1 to 65535")
    if not args.health_check_path.startswith("/"):
        raise InvalidInput("health_check_path", args.health_check_path, "a path starting with '/'")
    return check_timing(args.health_check_interval_s, args.failure_threshold, args.ttl_s)


class RegionalFailover(pulumi.ComponentResource):
    """S3 replication primary -> standby and Route 53 failover between the two regions' endpoints.

    ``primary`` and ``standby`` are the AWS providers of the two regions: the replication and its role
    live with the primary, the standby's key is looked up in its own region. Route 53 is global.
    """

    timing: FailoverTiming
    rto_s: float
    rpo_s: int | None
    record_name: str

    def __init__(
        self,
        name: str,
        args: RegionalFailoverArgs,
        *,
        primary: aws.Provider,
        standby: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        timing = validate(args)
        super().__init__("inferstack:failover:RegionalFailover", name, None, opts)
        in_primary = pulumi.ResourceOptions(parent=self, provider=primary)
        tags = {"inferstack.io/purpose": "regional-failover", **args.tags}

        # The model store encrypts with each region's AWS managed key; replicas are written with the
        # standby's, so its readers need no key grant beyond the one that key gives every S3 caller.
        keys = [
            aws.kms.get_key_output(key_id="alias/aws/s3", opts=pulumi.InvokeOptions(provider=p)).arn
            for p in (primary, standby)
        ]
        partition = aws.get_partition(opts=pulumi.InvokeOptions(provider=primary)).partition
        source_arn = pulumi.Output.concat(f"arn:{partition}:s3:::", args.primary_bucket)
        destination_arn = pulumi.Output.concat(f"arn:{partition}:s3:::", args.standby_bucket)
        role = aws.iam.Role(
            f"{name}-replication",
            assume_role_policy=json.dumps(replication_trust_policy()),
            tags=tags,
            opts=in_primary,
        )
        policy = pulumi.Output.all(source_arn, destination_arn, *keys).apply(
            lambda v: json.dumps(
                replication_policy(
                    source_arn=v[0],
                    destination_arn=v[1],
                    source_key_arn=v[2],
                    destination_key_arn=v[3],
                    source_region=args.primary_region,
                    destination_region=args.standby_region,
                )
            )
        )
        grant = aws.iam.RolePolicy(
            f"{name}-replication", role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=role)
        )
        rtc = args.replication_time_control
        aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=args.primary_bucket,
            role=role.arn,
            rules=[
                aws.s3.BucketReplicationConfigRuleArgs(
                    id="models-to-standby",
                    status="Enabled",
                    filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
                    # A deleted model (or a rolled-back publish) must not live on in the standby.
                    delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                        status="Enabled"
                    ),
                    # Without this S3 silently skips every KMS-encrypted object, i.e. all of ours.
                    source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                        sse_kms_encrypted_objects=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                            status="Enabled"
                        )
                    ),
                    destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                        bucket=destination_arn,
                        encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                            replica_kms_key_id=keys[1]
                        ),
                        **(replication_time_control(REPLICATION_TIME_CONTROL_MINUTES) if rtc else {}),
                    ),
                )
            ],
            # The role must be able to read before S3 tests it on the first replicated object.
            opts=pulumi.ResourceOptions(parent=self, provider=primary, depends_on=[grant, *args.after]),
        )

        for key, role_type, endpoint in (
            ("primary", "PRIMARY", args.primary_endpoint),
            ("standby", "SECONDARY", args.standby_endpoint),
        ):
            check = aws.route53.HealthCheck(
                f"{name}-{key}",
                type=args.health_check_type,
                fqdn=endpoint,
                enable_sni=args.health_check_type == "HTTPS" or None,
                port=args.health_check_port,
                resource_path=args.health_check_path,
                request_interval=args.health_check_interval_s,
                failure_threshold=args.failure_threshold,
                tags={**tags, "Name": f"{args.record_name} {key}"},
                opts=in_primary,
            )
            aws.route53.Record(
                f"{name}-{key}",
                zone_id=args.zone_id,
                name=args.record_name,
                type="CNAME",  # any endpoint's hostname; resolvers keep the answer ttl_s, counted in the RTO
                ttl=args.ttl_s,
                records=[endpoint],
                set_identifier=key,
                failover_routing_policies=[aws.route53.RecordFailoverRoutingPolicyArgs(type=role_type)],
                health_check_id=check.id,
                opts=in_primary,
            )

        self.timing = timing
        self.rto_s = timing.rto_s
        self.rpo_s = rpo_s(rtc)
        self.record_name = args.record_name
        self.register_outputs({"rto_s": self.rto_s, "rpo_s": self.rpo_s, "record_name": self.record_name})
