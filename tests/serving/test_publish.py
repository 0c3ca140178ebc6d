"""Publishing a model repository to S3 (moto): integrity, idempotence, order and failure midway."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from moto import mock_aws

from inferstack.infra.errors import InvalidInput
from inferstack.serving.publish import S3Location, parse_s3_uri, publish_repository, upload_order
from inferstack.serving.repository import ModelOptions, build_model, demo_model

BUCKET = "models"


@pytest.fixture
def s3(fake_aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def demo_repository(path: Path, *, version: int = 1, seed: int = 0, max_batch_size: int = 8) -> Path:
    module, example = demo_model()
    torch.manual_seed(seed)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter)
    options = ModelOptions(max_batch_size=max_batch_size)
    build_model(module, example, name="demo", repository=path, version=version, options=options)
    return path


def keys(s3: Any, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def body(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def test_uploads_every_file_with_its_sha256(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    report = publish_repository(repo, f"s3://{BUCKET}/prod/models", s3=s3)
    assert report.location == S3Location(BUCKET, "prod/models")
    assert keys(s3) == [
        "prod/models/demo/1/model.pt",
        "prod/models/demo/1/model.py",
        "prod/models/demo/config.pbtxt",
    ]
    for relative in report.uploaded:
        key = f"prod/models/{relative}"
        content = body(s3, key)
        assert content == (repo / relative).read_bytes()
        metadata = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        assert metadata["sha256"] == hashlib.sha256(content).hexdigest()


def test_config_goes_last_for_each_model(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo")
    module, example = demo_model()
    build_model(module, example, name="other", repository=repo)
    order = upload_order(repo)
    for model in ("demo", "other"):
        mine = [p for p in order if p.startswith(f"{model}/")]
        assert mine[-1] == f"{model}/config.pbtxt"
        assert len(mine) == 3


def test_republishing_is_idempotent(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    first = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    second = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    assert len(first.uploaded) == 3 and first.skipped == ()
    assert second.uploaded == () and sorted(second.skipped) == sorted(first.uploaded)


def test_a_new_version_and_a_changed_config_are_uploaded(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    demo_repository(repo, version=2, seed=1, max_batch_size=4)
    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    assert set(report.uploaded) == {"demo/2/model.pt", "demo/2/model.py", "demo/config.pbtxt"}
    assert "demo/1/model.pt" in report.skipped
    assert b"max_batch_size: 4" in body(s3, "m/demo/config.pbtxt")


def test_published_versions_are_immutable(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    before = body(s3, "m/demo/1/model.pt")
    demo_repository(repo, seed=5)  # same version number, other weights
    with pytest.raises(InvalidInput) as caught:
        publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    assert "demo/1/model.pt" in str(caught.value) and "new version" in caught.value.allowed
    assert body(s3, "m/demo/1/model.pt") == before
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, overwrite=True)
    assert body(s3, "m/demo/1/model.pt") == (repo / "demo/1/model.pt").read_bytes()


class FailingS3:
    """A real (moto) client whose Nth upload fails, as a dropped connection would."""

    def __init__(self, client: Any, fail_on: int) -> None:
        self.client, self.fail_on, self.uploads = client, fail_on, 0

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        self.uploads += 1
        if self.uploads == self.fail_on:
            raise ConnectionError("injected failure midway")
        self.client.upload_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_failure_midway_leaves_the_published_version_intact(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    published = {key: body(s3, key) for key in keys(s3)}

    demo_repository(repo, version=2, seed=1, max_batch_size=4)
    with pytest.raises(ConnectionError):
        # the last file of version 2 fails: everything before it went up, the config must not have
        publish_repository(repo, f"s3://{BUCKET}/m", s3=FailingS3(s3, fail_on=2))
    # version 1 and the config that points at it are untouched; version 2 is not announced.
    for key, content in published.items():
        assert body(s3, key) == content
    assert b"max_batch_size: 4" not in body(s3, "m/demo/config.pbtxt")

    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)  # a retry completes the job
    assert "demo/config.pbtxt" in report.uploaded
    assert b"max_batch_size: 4" in body(s3, "m/demo/config.pbtxt")


def test_corruption_in_transit_is_detected(tmp_path: Path, s3: Any) -> None:
    class Corrupting(FailingS3):
        def upload_file(self, filename: str, bucket: str, key: str, **kwargs: Any) -> None:
            self.client.put_object(Bucket=bucket, Key=key, Body=b"not the file", **kwargs["ExtraArgs"])

    repo = demo_repository(tmp_path / "repo")
    with pytest.raises(RuntimeError, match="differs"):
        publish_repository(repo, f"s3://{BUCKET}/m", s3=Corrupting(s3, fail_on=0))


@pytest.mark.parametrize(
    "uri",
    [
        "models/x",
        "s3://",
        "s3://UPPER/x",
        "s3://ab/x",
        "https://bucket/x",
        "s3://bucket/a/../b",
        "s3://b_x/p",
    ],
)
def test_bad_destinations(uri: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_s3_uri(uri)
    assert caught.value.field == "destination" and uri in str(caught.value)


def test_destination_forms() -> None:
    assert parse_s3_uri("s3://my-bucket") == S3Location("my-bucket", "")
    assert parse_s3_uri("s3://my-bucket/a/b/").uri == "s3://my-bucket/a/b"


def test_missing_or_empty_repository(tmp_path: Path, s3: Any) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "absent", tmp_path / "empty"):
        with pytest.raises(InvalidInput) as caught:
            publish_repository(path, f"s3://{BUCKET}/m", s3=s3)
        assert caught.value.field == "repository"
    assert keys(s3) == []
