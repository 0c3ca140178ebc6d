"""ModelStore: a hardened bucket, and reader roles that can read their own prefix and nothing else."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore, reader_policy, tls_only_policy
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.processes import RuntimeFailure, find_triton
from inferstack.serving.local.runtime import LocalRuntime
from tests.conftest import unavailable
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
        # HeadBucket, Triton's first call: s3:ListBucket with no prefix, which IAM cannot tell from an
        # unprefixed list; so key names are listable bucket-wide, and objects stay scoped below.
        ("s3:ListBucket", BUCKET, None, True),
        ("s3:GetObject", f"{BUCKET}/rankerx/secret.pt", None, False),  # a sibling prefix sharing the name
        ("s3:GetObject", f"{BUCKET}/other/model.pt", None, False),
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


# --- the calls the real Triton makes, against the policy ------------------------------------------------


class S3Recorder(ThreadingHTTPServer):
    """A loopback HTTP proxy in front of the moto server that records every request passing through."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the AWS SDK keeps connections alive
    server: S3Recorder

    def forward(self) -> None:
        self.server.calls.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream.netloc, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        if response.getheader("Content-Length") is None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def as_iam_request(method: str, path: str) -> tuple[str, str, dict[str, str]]:
    """(action, resource, condition context) IAM evaluates for one path-style S3 request."""
    url = urllib.parse.urlsplit(path)
    bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    arn = f"arn:aws:s3:::{bucket}"
    if not key and method == "HEAD":  # HeadBucket
        return "s3:ListBucket", arn, {}
    if not key and method == "GET" and "location" in query:
        return "s3:GetBucketLocation", arn, {}
    if (
        not key
        and method == "GET"
        and not set(query)
        - {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "encoding-type",
            "marker",
            "start-after",
            "fetch-owner",
        }
    ):
        return "s3:ListBucket", arn, {"s3:prefix": query["prefix"][0]} if "prefix" in query else {}
    if key and method in ("GET", "HEAD") and not set(query) - {"partNumber"}:
        return "s3:GetObject", f"{arn}/{key}", {}
    raise AssertionError(f"an S3 call this test cannot map to IAM: {method} {path}")


class RecordedRuntime(LocalRuntime):
    """The local runtime with Triton reading S3 through the recorder (publishing goes to moto directly)."""

    recorder: S3Recorder

    def _publish(self) -> None:
        super()._publish()
        self.recorder = S3Recorder(self.s3_endpoint)
        self.model_repository_uri = f"s3://{self.recorder.endpoint}/{self.bucket}/{self.prefix}"


@pytest.fixture(scope="module")
def triton_s3_calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, str]]]:
    try:
        find_triton()
    except RuntimeFailure as error:
        unavailable(str(error))
    repository = build_demo_repository(tmp_path_factory.mktemp("repository"))
    runtime = RecordedRuntime(
        repository, work_dir=tmp_path_factory.mktemp("runtime"), prefix="ranker", model_cache=False
    )
    try:
        with runtime:  # ready means every model loaded: Triton has read all it needs
            yield list(runtime.recorder.calls)
    finally:
        if hasattr(runtime, "recorder"):
            runtime.recorder.shutdown()


@pytest.mark.real_server
def test_the_reader_policy_allows_every_call_the_real_triton_makes(
    triton_s3_calls: list[tuple[str, str]],
) -> None:
    """Real Triton 2.51 loads its repository through the recorder; IAM evaluates each call it made."""
    requests = [as_iam_request(method, path) for method, path in triton_s3_calls]
    assert ("s3:ListBucket", "arn:aws:s3:::inferstack-models", {}) in requests  # HeadBucket
    assert any(action == "s3:GetObject" for action, _, _ in requests)
    policy = reader_policy("arn:aws:s3:::inferstack-models", "ranker")
    denied = [request for request in requests if not allowed(policy, *request)]
    assert denied == []
    # What it read, it read from its own prefix.
    for action, resource, _ in requests:
        if action == "s3:GetObject":
            assert resource.startswith("arn:aws:s3:::inferstack-models/ranker/")


def test_the_recorded_calls_map_to_iam_as_aws_documents() -> None:
    assert as_iam_request("HEAD", "/b") == ("s3:ListBucket", "arn:aws:s3:::b", {})
    assert as_iam_request("GET", "/b?list-type=2&prefix=ranker%2F&delimiter=%2F") == (
        "s3:ListBucket",
        "arn:aws:s3:::b",
        {"s3:prefix": "ranker/"},
    )
    assert as_iam_request("GET", "/b/ranker/demo/config.pbtxt") == (
        "s3:GetObject",
        "arn:aws:s3:::b/ranker/demo/config.pbtxt",
        {},
    )
    with pytest.raises(AssertionError):
        as_iam_request("PUT", "/b/ranker/x")
