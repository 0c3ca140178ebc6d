"""The pod's model wait (components/model_wait.py): what it reads, how it signs, when it lets Triton start."""

from __future__ import annotations

import ast
import datetime
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from inferstack.components import model_wait
from inferstack.components.model_wait import Credentials, Model, missing, parse_target, signed_headers
from inferstack.infra import model_manifest

NOW = datetime.datetime(2026, 12, 4, 21, 0, 0, tzinfo=datetime.UTC)
CREDENTIALS = Credentials("ASIAEXAMPLE", "secret/key+example", "session-token")


def test_it_reads_the_manifest_the_publishers_write() -> None:
    assert model_wait.MANIFEST == model_manifest.MANIFEST


def test_it_runs_on_the_python_of_tritons_image() -> None:
    """Triton 24.10's image has Python 3.10 and no third-party packages: the script imports only the
    standard library, and nothing of 3.11+ (datetime.UTC, tomllib, typing.Self)."""
    source = Path(model_wait.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 10))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {
        "__future__",
        "datetime",
        "hashlib",
        "hmac",
        "json",
        "os",
        "sys",
        "time",
        "urllib",
        "collections",
        "dataclasses",
        "xml",
    }
    assert "datetime.UTC" not in source and "tomllib" not in source and "Self" not in source


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        ("s3://models-abc/ranker", "https://models-abc.s3.us-west-2.amazonaws.com/ranker/x%20y.json"),
        (
            "s3://http://127.0.0.1:5000/models/team/ranker",
            "http://127.0.0.1:5000/models/team/ranker/x%20y.json",
        ),
    ],
)
def test_the_target_is_tritons_repository_uri(uri: str, url: str) -> None:
    target = parse_target(uri, "us-west-2")
    assert target.url(target.key("x y.json")) == url


def test_requests_are_signed_as_botocore_signs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    target = parse_target("s3://models-abc/ranker", "us-east-1")
    url = target.url("", {"list-type": "2", "prefix": "ranker/ranker/"})
    ours = signed_headers("GET", url, region="us-east-1", credentials=CREDENTIALS, now=NOW)
    request = AWSRequest(
        method="GET", url=url, headers={"x-amz-content-sha256": ours["x-amz-content-sha256"]}
    )
    signer = S3SigV4Auth(
        BotoCredentials("ASIAEXAMPLE", "secret/key+example", "session-token"), "s3", "us-east-1"
    )
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    signer.add_auth(request)
    theirs = request.headers["Authorization"]
    assert ours["authorization"] == theirs


def manifest(files: Mapping[str, str]) -> bytes:
    return model_manifest.manifest_bytes("ranker", files)


@pytest.mark.parametrize(
    ("model", "body", "keys", "ready"),
    [
        (Model("ranker"), None, set(), False),  # empty prefix
        (Model("ranker"), None, {"1/model.py", "config.pbtxt"}, False),  # all but the manifest
        (Model("ranker"), b"{not json", set(), False),
        (
            Model("ranker", (2,)),
            manifest({"1/model.py": "a", "config.pbtxt": "b"}),
            {"1/model.py", "config.pbtxt"},
            False,
        ),
        (Model("ranker"), manifest({"1/model.py": "a", "config.pbtxt": "b"}), {"config.pbtxt"}, False),
        (
            Model("ranker", (1,)),
            manifest({"1/model.py": "a", "config.pbtxt": "b"}),
            {"1/model.py", "config.pbtxt", model_wait.MANIFEST},
            True,
        ),
        (
            Model("ranker"),
            manifest({"1/model.py": "a", "config.pbtxt": "b"}),
            {"1/model.py", "config.pbtxt"},
            True,
        ),
        # a publish of version 2 in progress, then done (the old version may stay: it is not the newest)
        (
            Model("ranker"),
            manifest({"1/model.py": "a", "config.pbtxt": "b"}),
            {"1/model.py", "2/model.py", "config.pbtxt"},
            False,
        ),
        (
            Model("ranker"),
            manifest({"2/model.py": "a", "config.pbtxt": "b"}),
            {"1/model.py", "2/model.py", "config.pbtxt"},
            True,
        ),
    ],
)
def test_triton_starts_only_on_a_complete_model(
    model: Model, body: bytes | None, keys: set[str], ready: bool
) -> None:
    assert (missing(model, body, keys) is None) is ready


def test_it_logs_what_it_waits_for_and_never_gives_up() -> None:
    """An error is a reason to wait (IAM and the bucket may still be settling), not to exit."""
    target = parse_target("s3://models-abc/ranker", "us-east-1")
    answers = iter(
        [
            (403, b"<Error>AccessDenied</Error>"),
            (404, b""),
            (200, b"<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'/>"),
            (200, manifest({"1/model.py": "a", "config.pbtxt": "b"})),
            (
                200,
                b"<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
                b"<Contents><Key>ranker/ranker/1/model.py</Key></Contents>"
                b"<Contents><Key>ranker/ranker/config.pbtxt</Key></Contents></ListBucketResult>",
            ),
        ]
    )
    lines: list[str] = []
    sleeps: list[float] = []
    model_wait.wait_for_models(
        target,
        [Model("ranker", (1,))],
        lambda key, query: next(answers),
        log=lines.append,
        sleep=sleeps.append,
    )
    assert lines[0].startswith(
        "waiting for s3://models-abc/ranker/ranker/inferstack-manifest.json: S3 answered 403"
    )
    assert "no manifest yet (0 object(s)" in lines[1]
    assert lines[-1].startswith("found s3://models-abc/ranker/ranker/ complete")
    assert sleeps == [model_wait.POLL_S, model_wait.POLL_S]


def test_without_an_irsa_identity_it_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="AWS_WEB_IDENTITY_TOKEN_FILE unset"):
        model_wait.web_identity_credentials({"AWS_ROLE_ARN": "arn:aws:iam::1:role/x"}, "us-east-1")


def test_a_wrong_argument_is_refused_at_once() -> None:
    assert model_wait.main(["--models", "x"], {}) == 2


def test_the_manifest_format_is_json_with_sorted_keys() -> None:
    body = manifest({"2/model.py": "b", "1/model.py": "a"})
    assert json.loads(body) == {"model": "ranker", "sha256": {"1/model.py": "a", "2/model.py": "b"}}
    assert body.index(b"1/model.py") < body.index(b"2/model.py")
    assert model_manifest.manifest_versions(json.loads(body)["sha256"]) == [1, 2]
