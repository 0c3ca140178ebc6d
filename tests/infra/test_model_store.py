"""ModelStore: a hardened bucket, and reader roles that can read their own prefix and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore, reader_policy, tls_only_policy
from tests.harness import run_program
from tests.infra.iam import allowed

BUCKET = "arn:aws:s3:::models-1"
OIDC_ARN = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"


@pytest.mark.parametrize(
    ("action", "resource", "prefix", "expected"),
    [
        ("s3:GetObject", f"{BUCKET}/ranker/demo/1/model.pt", None, True),
        ("s3:GetObject", f"{BUCKET}/ranker/demo/config.pbtxt", None, True),
        ("s3:ListBucket", BUCKET, "ranker/demo/", True),
        ("s3:ListBucket", BUCKET, "ranker/", True),
        ("s3:ListBucket", BUCKET, "ranker", False),  # would list the sibling "rankerx/" too
        ("s3:ListBucket", BUCKET, "rankerx/", False),
        ("s3:GetObject", f"{BUCKET}/rankerx/secret.pt", None, False),  # a sibling prefix sharing the name
        ("s3:GetObject", f"{BUCKET}/other/model.pt", None, False),
        ("s3:ListBucket", BUCKET, "other/", False),
        ("s3:ListBucket", BUCKET, "", False),  # listing the whole bucket
        ("s3:ListBucket", BUCKET, None, False),  # ... with no prefix at all
        ("s3:PutObject", f"{BUCKET}/ranker/demo/config.pbtxt", None, False),
        ("s3:DeleteObject", f"{BUCKET}/ranker/demo/1/model.pt", None, False),
        ("s3:GetObject", "arn:aws:s3:::another-bucket/ranker/x", None, False),
    ],
)
def test_reader_reads_its_prefix_and_nothing_else(
    action: str, resource: str, prefix: str | None, expected: bool
) -> None:
    context = {"s3:prefix": prefix} if prefix is not None else {}
    assert allowed(reader_policy(BUCKET, "ranker"), action, resource, context) is expected


def test_tls_only_policy_denies_plain_http() -> None:
    policy = json.loads(tls_only_policy(BUCKET))
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize("prefix", ["", "/ranker", "ranker/", "a/../b", "ranker/*", "a//b"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        reader_policy(BUCKET, prefix)
    assert caught.value.field == "prefix"


def build() -> dict[str, Any]:
    store = ModelStore("models")
    role = store.reader_role(
        "ranker",
        namespace="serving",
        service_account="ranker",
        prefix="ranker",
        oidc_provider_arn=OIDC_ARN,
        oidc_issuer_url=ISSUER,
    )
    return {"uri": store.uri("ranker"), "role": role.arn}


def test_bucket_is_hardened() -> None:
    recording, outputs = run_program(build)
    assert outputs["uri"] == "s3://models-bucket/ranker"
    by_type = {r.type: r.inputs for r in recording if r.parent_type == "inferstack:model_store:ModelStore"}
    assert by_type["aws:s3/bucket:Bucket"]["forceDestroy"] is False
    assert (
        by_type["aws:s3/bucketVersioning:BucketVersioning"]["versioningConfiguration"]["status"] == "Enabled"
    )
    rule = by_type["aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"][
        "rules"
    ][0]
    assert (
        rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms" and rule["bucketKeyEnabled"]
    )
    block = by_type["aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"]
    assert all(
        block[k]
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    assert (
        by_type["aws:s3/bucketOwnershipControls:BucketOwnershipControls"]["rule"]["objectOwnership"]
        == "BucketOwnerEnforced"
    )
    policy = json.loads(by_type["aws:s3/bucketPolicy:BucketPolicy"]["policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    lifecycle = by_type["aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"]["rules"][0]
    assert lifecycle["noncurrentVersionExpiration"]["noncurrentDays"] == 30


def test_reader_role_trusts_exactly_one_service_account() -> None:
    recording, _ = run_program(build)
    role = recording.one("aws:iam/role:Role", "ranker-reader")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    statement = trust["Statement"][0]
    assert statement["Principal"] == {"Federated": OIDC_ARN}
    host = ISSUER.removeprefix("https://")
    assert statement["Condition"]["StringEquals"] == {
        f"{host}:sub": "system:serviceaccount:serving:ranker",
        f"{host}:aud": "sts.amazonaws.com",
    }
    inline = json.loads(recording.one("aws:iam/rolePolicy:RolePolicy", "ranker-reader").inputs["policy"])
    bucket = "arn:aws:s3:us-east-1:123456789012:models-bucket"
    assert allowed(inline, "s3:GetObject", f"{bucket}/ranker/demo/config.pbtxt")
    assert not allowed(inline, "s3:GetObject", f"{bucket}/other/demo/config.pbtxt")
    assert not allowed(inline, "s3:PutObject", f"{bucket}/ranker/demo/config.pbtxt")


def test_bad_reader_arguments_register_nothing_more() -> None:
    def bad() -> None:
        store = ModelStore("models")
        with pytest.raises(InvalidInput) as caught:
            store.reader_role(
                "x",
                namespace="Serving",
                service_account="a",
                prefix="p",
                oidc_provider_arn="a",
                oidc_issuer_url="b",
            )
        assert caught.value.field == "namespace"

    recording, _ = run_program(bad)
    assert not recording.of_type("aws:iam/role:Role")


def test_bucket_settings_are_applied_one_after_another() -> None:
    """S3 refuses concurrent configuration changes of one bucket (409 OperationAborted): each bucket
    setting must wait for another, so that they form one chain from the bucket."""
    recording, _ = run_program(lambda: ModelStore("models"))
    bucket = recording.one("aws:s3/bucket:Bucket")
    settings = [r for r in recording if r.type.startswith("aws:s3/") and r is not bucket]
    assert len(settings) == 6
    by_urn = {r.urn: r for r in settings}
    waits_for_a_setting = [r for r in settings if any(d in by_urn for d in r.dependencies)]
    # All but the first wait for another setting, and no two wait for the same one.
    assert len(waits_for_a_setting) == len(settings) - 1
    predecessors = [next(d for d in r.dependencies if d in by_urn) for r in waits_for_a_setting]
    assert len(set(predecessors)) == len(predecessors)
