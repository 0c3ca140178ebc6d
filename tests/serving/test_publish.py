"""Publishing a model repository to S3 (moto): integrity, idempotence, order and failure midway."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from moto import mock_aws

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.build import build_model
from inferstack.serving.models.publish import (
    IntegrityError,
    S3Location,
    parse_s3_uri,
    publish_repository,
    upload_order,
    verify_published,
)
from inferstack.serving.models.repository import demo_model
from inferstack.serving.models.specs import ModelOptions

BUCKET = "models"


@pytest.fixture
def s3(fake_aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def demo_repository(
    path: Path, *, name: str = "demo", version: int = 1, seed: int = 0, max_batch_size: int = 8
) -> Path:
    module, example = demo_model()
    torch.manual_seed(seed)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter)
    options = ModelOptions(max_batch_size=max_batch_size)
    build_model(module, example, name=name, repository=path, version=version, options=options)
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
        "prod/models/demo/inferstack-manifest.json",
    ]
    assert sorted(report.uploaded) == ["demo/1/model.pt", "demo/1/model.py", "demo/config.pbtxt"]
    for relative in report.uploaded:
        key = f"prod/models/{relative}"
        content = (repo / relative).read_bytes()
        assert body(s3, key) == content
        digest = hashlib.sha256(content)
        assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"] == digest.hexdigest()
        # S3's own checksum, which real S3 checks on receipt and refuses the object when it differs.
        stored = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"]
        assert stored == base64.b64encode(digest.digest()).decode()


def test_config_goes_last_for_each_model(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo")
    demo_repository(repo, name="other")
    demo_repository(repo, name="other", version=2)
    assert upload_order(repo) == [
        "demo/1/model.pt",
        "demo/1/model.py",
        "demo/config.pbtxt",
        "other/1/model.pt",
        "other/1/model.py",
        "other/2/model.pt",
        "other/2/model.py",
        "other/config.pbtxt",
    ]


def test_caches_and_hidden_files_stay_home(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo")
    (repo / "demo" / "1" / "__pycache__").mkdir()
    (repo / "demo" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"cache")
    (repo / "demo" / "1" / "stray.pyc").write_bytes(b"cache")
    (repo / ".demo-2-staging").mkdir()
    (repo / ".demo-2-staging" / "config.pbtxt").write_text("half-built")
    (repo / "demo" / ".notes").write_text("local")
    assert upload_order(repo) == ["demo/1/model.pt", "demo/1/model.py", "demo/config.pbtxt"]


def test_republishing_is_idempotent(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    lines: list[str] = []
    first = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, progress=lines.append)
    second = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, progress=lines.append)
    assert len(first.uploaded) == 3 and first.skipped == ()
    assert second.uploaded == () and sorted(second.skipped) == sorted(first.uploaded)
    assert lines[0] == "[1/3] uploaded demo/1/model.pt" and lines[3] == "[1/3] unchanged demo/1/model.pt"


def test_a_new_version_and_a_changed_config_are_uploaded(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    demo_repository(repo, version=2, seed=1, max_batch_size=4)
    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    assert report.uploaded == ("demo/2/model.pt", "demo/2/model.py", "demo/config.pbtxt")
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

    def __init__(self, client: Any, fail_on: int, *, deletes_fail: bool = False) -> None:
        self.client, self.fail_on, self.deletes_fail, self.uploads = client, fail_on, deletes_fail, 0

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        self.uploads += 1
        if self.uploads == self.fail_on:
            raise ConnectionError("injected failure midway")
        self.client.upload_file(*args, **kwargs)

    def delete_object(self, **kwargs: Any) -> Any:
        if self.deletes_fail:
            raise ConnectionError("still offline")
        return self.client.delete_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_failure_midway_leaves_the_published_version_intact(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    published = {key: body(s3, key) for key in keys(s3)}

    demo_repository(repo, version=2, seed=1, max_batch_size=4)
    with pytest.raises(ConnectionError) as caught:
        # version 2's model.pt goes up, its model.py fails: the new config must never follow
        publish_repository(repo, f"s3://{BUCKET}/m", s3=FailingS3(s3, fail_on=2))
    # version 1 and the config that points at it are untouched and readable; version 2 is gone again,
    # so a "latest version" reader cannot pick a half-uploaded folder.
    assert keys(s3) == sorted(published)
    for key, content in published.items():
        assert body(s3, key) == content
    assert b"max_batch_size: 8" in body(s3, "m/demo/config.pbtxt")
    assert "removed the 2 object(s)" in "\n".join(caught.value.__notes__)

    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)  # a retry completes the job
    assert report.uploaded == ("demo/2/model.pt", "demo/2/model.py", "demo/config.pbtxt")
    assert b"max_batch_size: 4" in body(s3, "m/demo/config.pbtxt")


def test_failure_in_a_later_model_keeps_the_earlier_complete_one(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    demo_repository(repo, name="other")
    with pytest.raises(ConnectionError):
        publish_repository(repo, f"s3://{BUCKET}/m", s3=FailingS3(s3, fail_on=6))  # other's config
    assert keys(s3) == ["m/demo/1/model.pt", "m/demo/1/model.py", "m/demo/config.pbtxt"]


def test_a_failed_cleanup_is_reported(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    with pytest.raises(ConnectionError) as caught:
        publish_repository(repo, f"s3://{BUCKET}/m", s3=FailingS3(s3, fail_on=3, deletes_fail=True))
    notes = "\n".join(caught.value.__notes__)
    assert "could not remove" in notes and "m/demo/1/model.pt" in notes and "m/demo/config.pbtxt" in notes
    assert keys(s3) == ["m/demo/1/model.pt", "m/demo/1/model.py"]  # never a config: Triton ignores these


def test_corruption_in_transit_is_detected(tmp_path: Path, s3: Any) -> None:
    class Corrupting(FailingS3):
        def upload_file(self, filename: str, bucket: str, key: str, **kwargs: Any) -> None:
            self.client.put_object(Bucket=bucket, Key=key, Body=b"not the file", **kwargs["ExtraArgs"])

    repo = demo_repository(tmp_path / "repo")
    with pytest.raises(IntegrityError, match=r"demo/1/model\.pt"):
        publish_repository(repo, f"s3://{BUCKET}/m", s3=Corrupting(s3, fail_on=0))
    assert keys(s3) == []


def test_lost_metadata_is_detected(tmp_path: Path, s3: Any) -> None:
    class Forgetting(FailingS3):
        def upload_file(self, filename: str, bucket: str, key: str, **kwargs: Any) -> None:
            self.client.upload_file(filename, bucket, key)

    repo = demo_repository(tmp_path / "repo")
    with pytest.raises(IntegrityError, match="metadata None"):
        publish_repository(repo, f"s3://{BUCKET}/m", s3=Forgetting(s3, fail_on=0))


def test_default_client_and_a_missing_bucket(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    report = publish_repository(repo, S3Location(BUCKET, ""))  # the client built from the environment
    assert report.location.uri == f"s3://{BUCKET}" and keys(s3)[0] == "demo/1/model.pt"
    with pytest.raises(InvalidInput) as caught:
        publish_repository(repo, "s3://no-such-bucket/m", s3=s3)
    assert caught.value.field == "destination" and "exists" in caught.value.allowed


@pytest.mark.parametrize(
    "uri",
    [
        "models/x",
        "s3://",
        "s3://UPPER/x",
        "s3://ab/x",
        "https://bucket/x",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
        "s3://b_x/p",
        "s3://-bucket/p",
        "s3://bucket-/p",
        "s3://my..bucket/p",
        "s3://bücket/p",
        "s3://" + "b" * 64,
    ],
)
def test_bad_destinations(uri: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_s3_uri(uri)
    assert caught.value.field == "destination" and repr(uri) in str(caught.value)


def test_destination_forms() -> None:
    assert parse_s3_uri("s3://my-bucket") == S3Location("my-bucket", "")
    assert parse_s3_uri("s3://my.bucket.1/a/b/").uri == "s3://my.bucket.1/a/b"
    assert S3Location("b", "a/b").key("demo/config.pbtxt") == "a/b/demo/config.pbtxt"
    with pytest.raises(InvalidInput) as caught:
        parse_s3_uri("x", field="--to")
    assert caught.value.field == "--to"


def test_missing_empty_or_incomplete_repository(tmp_path: Path, s3: Any) -> None:
    (tmp_path / "empty").mkdir()
    no_config = demo_repository(tmp_path / "no-config")
    config = (no_config / "demo" / "config.pbtxt").read_text()
    (no_config / "demo" / "config.pbtxt").unlink()
    no_version = tmp_path / "no-version" / "demo"
    no_version.mkdir(parents=True)
    (no_version / "config.pbtxt").write_text(config)
    for path in (tmp_path / "absent", tmp_path / "empty", no_config, no_version.parent):
        with pytest.raises(InvalidInput) as caught:
            publish_repository(path, f"s3://{BUCKET}/m", s3=s3)
        assert caught.value.field == "repository"
    assert keys(s3) == []


def test_what_triton_could_not_load_is_refused_before_upload(tmp_path: Path, s3: Any) -> None:
    """No model file, a garbage config, a config naming another model, version 0, a link leaving the repo."""
    cases: dict[str, tuple[str, str]] = {}

    def case(name: str, field: str, fragment: str) -> Path:
        cases[name] = (field, fragment)
        return demo_repository(tmp_path / name)

    no_model = case("no-model", "demo/1", "model.pt")
    (no_model / "demo" / "1" / "model.pt").unlink()
    garbage = case("garbage", "demo/config.pbtxt", "ModelConfig")
    (garbage / "demo" / "config.pbtxt").write_text("this is { not a config")
    renamed = case("renamed", "demo/config.pbtxt: name", "folder name")
    text = (renamed / "demo" / "config.pbtxt").read_text()
    (renamed / "demo" / "config.pbtxt").write_text(text.replace('name: "demo"', 'name: "other"'))
    zero = case("zero", "demo/0", "numbered from 1")
    (zero / "demo" / "1").rename(zero / "demo" / "0")
    link = case("link", "repository", "no links leading out")
    secret = tmp_path / "secret.txt"
    secret.write_text("not the model's")
    (link / "demo" / "1" / "notes.txt").symlink_to(secret)
    for name, (field, fragment) in cases.items():
        with pytest.raises(InvalidInput) as caught:
            publish_repository(tmp_path / name, f"s3://{BUCKET}/{name}", s3=s3)
        assert caught.value.field == field and fragment in str(caught.value), name
    assert keys(s3) == []


def test_a_changed_config_of_a_published_version_needs_overwrite(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    config = repo / "demo" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 2"))
    with pytest.raises(InvalidInput) as caught:
        publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    assert caught.value.value == ["demo/config.pbtxt"] and "immutable" in caught.value.allowed
    assert b"max_batch_size: 8" in body(s3, "m/demo/config.pbtxt")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, overwrite=True)
    assert b"max_batch_size: 2" in body(s3, "m/demo/config.pbtxt")


def test_verify_compares_every_object_with_the_manifest(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    location = S3Location(BUCKET, "m")
    publish_repository(repo, location, s3=s3)
    assert verify_published(location, s3=s3) == []
    s3.put_object(Bucket=BUCKET, Key="m/demo/1/model.pt", Body=b"tampered")
    s3.put_object(Bucket=BUCKET, Key="m/demo/2/model.pt", Body=b"stray")
    s3.delete_object(Bucket=BUCKET, Key="m/demo/1/model.py")
    s3.put_object(Bucket=BUCKET, Key="m/unmanifested/config.pbtxt", Body=b"x")
    problems = verify_published(location, s3=s3)
    assert len(problems) == 4, problems
    assert any(p.startswith("demo/1/model.pt: sha256") for p in problems)
    assert "demo/1/model.py: missing" in problems and "demo/2/model.pt: not in the manifest" in problems
    assert any(p.startswith("unmanifested: no inferstack-manifest.json") for p in problems)


def test_served_only_and_prune_keep_the_prefix_to_what_the_policy_serves(tmp_path: Path, s3: Any) -> None:
    """Triton copies every version folder of a model into the pod's cache: versions outside the
    policy (here the default, the newest) are not uploaded, and once the new manifest is up the
    ones published before are deleted."""
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)  # version 1, served then
    demo_repository(repo, version=2, seed=1)
    assert upload_order(repo, served_only=True) == ["demo/2/model.pt", "demo/2/model.py", "demo/config.pbtxt"]
    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, served_only=True, prune=True)
    assert sorted(report.pruned) == ["demo/1/model.pt", "demo/1/model.py"]
    assert keys(s3) == [
        "m/demo/2/model.pt",
        "m/demo/2/model.py",
        "m/demo/config.pbtxt",
        "m/demo/inferstack-manifest.json",
    ]
    assert verify_published(S3Location(BUCKET, "m"), s3=s3) == []


def test_without_prune_nothing_published_is_deleted(tmp_path: Path, s3: Any) -> None:
    repo = demo_repository(tmp_path / "repo")
    publish_repository(repo, f"s3://{BUCKET}/m", s3=s3)
    demo_repository(repo, version=2, seed=1)
    report = publish_repository(repo, f"s3://{BUCKET}/m", s3=s3, served_only=True)
    assert report.pruned == ()
    assert "m/demo/1/model.pt" in keys(s3)
