"""The S3 model repository and the IRSA roles that read it.

The bucket is versioned (a bad publish can be rolled back), encrypted with KMS, closed to the public,
owner-enforced (no ACLs), reachable over TLS only, and forgets noncurrent versions after a while.
Each model service gets its own role that can read its own prefix's objects and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import Oidc, irsa_role
from inferstack.infra.names import check_bucket_prefix

# Re-exported: the stack and TritonModelService import it from here.
from inferstack.infra.prefixes import check_prefix as check_prefix

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def tls_only_policy(bucket_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


def reader_policy(bucket_arn: str, prefix: str) -> dict[str, Any]:
    """Read-only on ``prefix``: get its objects, list the bucket's keys; nothing else in the bucket.

    Triton opens an S3 repository with HeadBucket, which IAM authorizes as s3:ListBucket with no
    s3:prefix in the request: a prefix condition on the list grant denies it, and the pods crash-loop.
    IAM cannot tell that call from an unprefixed ListObjects, so the list is on the bucket as a whole
    (key names only); what can be read, the objects, stays scoped to the prefix.
    """
    check_prefix(prefix)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OpenAndListBucket",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
            },
            {
                "Sid": "ReadOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                # "<prefix>/*", never "<prefix>*": "ranker*" would also read "rankerx/".
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
        ],
    }


BucketSetting = tuple[str, Callable[..., pulumi.CustomResource], dict[str, Any]]


def bucket_settings(bucket_arn: pulumi.Output[str], noncurrent_version_days: int) -> list[BucketSetting]:
    """The bucket's configuration resources in the order they are applied: logical suffix, resource
    type, properties besides the bucket."""
    s3 = aws.s3
    return [
        (
            "ownership",
            s3.BucketOwnershipControls,
            {"rule": s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced")},
        ),
        (
            "public-access",
            s3.BucketPublicAccessBlock,
            {
                "block_public_acls": True,
                "block_public_policy": True,
                "ignore_public_acls": True,
                "restrict_public_buckets": True,
            },
        ),
        (
            "versioning",
            s3.BucketVersioning,
            {"versioning_configuration": s3.BucketVersioningVersioningConfigurationArgs(status="Enabled")},
        ),
        (
            "encryption",
            s3.BucketServerSideEncryptionConfiguration,
            {
                "rules": [
                    s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default=s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                            sse_algorithm="aws:kms"
                        ),
                        bucket_key_enabled=True,  # one data key per bucket, not a KMS call per object read
                    )
                ]
            },
        ),
        ("tls-only", s3.BucketPolicy, {"policy": bucket_arn.apply(tls_only_policy)}),
        (
            "lifecycle",
            s3.BucketLifecycleConfiguration,
            {
                "rules": [
                    s3.BucketLifecycleConfigurationRuleArgs(
                        id="expire-noncurrent-versions",
                        status="Enabled",
                        filter=s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                        noncurrent_version_expiration=s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                            noncurrent_days=noncurrent_version_days
                        ),
                        abort_incomplete_multipart_upload=s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                            days_after_initiation=7
                        ),
                    )
                ]
            },
        ),
    ]


@dataclass
class ModelStoreArgs:
    """How long old model versions are kept, whether a destroy may empty the bucket, and tags."""

    noncurrent_version_days: int = 30
    force_destroy: bool = False  # a stack destroy must not silently delete every model
    tags: dict[str, str] = field(default_factory=dict)


class ModelStore(pulumi.ComponentResource):
    """The S3 model repository: versioned, KMS-encrypted, public access blocked, TLS only, with
    IRSA reader roles scoped to one prefix each (``reader_role``)."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: ModelStoreArgs | None = None, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        args = args or ModelStoreArgs()
        check_bucket_prefix("name", name)
        if args.noncurrent_version_days < 1:
            raise InvalidInput("noncurrent_version_days", args.noncurrent_version_days, "an integer >= 1")
        super().__init__("inferstack:model_store:ModelStore", name, None, opts)
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket_prefix=f"{name}-",
            force_destroy=args.force_destroy,
            tags={"inferstack.io/purpose": "model-repository", **args.tags},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # S3 answers OperationAborted (409) to concurrent changes of one bucket's configuration:
        # each setting waits for the one before it.
        previous: pulumi.Resource = bucket
        for setting, kind, properties in bucket_settings(bucket.arn, args.noncurrent_version_days):
            previous = kind(
                f"{name}-{setting}",
                bucket=bucket.id,
                **properties,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[previous]),
            )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})

    def uri(self, prefix: str) -> pulumi.Output[str]:
        check_prefix(prefix)
        return self.bucket_name.apply(lambda bucket: f"s3://{bucket}/{prefix}")

    def reader_role(
        self,
        name: str,
        *,
        namespace: str,
        service_account: str,
        prefix: str,
        oidc_provider_arn: pulumi.Input[str],
        oidc_issuer_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> aws.iam.Role:
        """An IRSA role for ``namespace/service_account`` that can read ``prefix`` and nothing else."""
        check_prefix(prefix)
        for field_name, value in (("namespace", namespace), ("service_account", service_account)):
            if not _DNS_LABEL.match(value):
                raise InvalidInput(field_name, value, "a DNS-1123 label (lowercase letters, digits, '-')")
        return irsa_role(
            f"{name}-reader",
            Oidc(oidc_provider_arn, oidc_issuer_url),
            namespace,
            service_account,
            policies={
                f"{name}-reader": self.bucket_arn.apply(lambda arn: json.dumps(reader_policy(arn, prefix)))
            },
            opts=opts,
            grants_under_role=True,
        ).role
