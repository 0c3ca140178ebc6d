"""Publish a local Triton model repository to S3, safely for readers that poll it.

Each file goes up with its sha256 in the object metadata and is checked after upload; files whose
key already holds the same sha256 are skipped, so publishing is idempotent. Within a model, the
version folders go first and ``config.pbtxt`` last: Triton (or anyone) reading the bucket never
sees a config that points at a version whose files are still missing. A failure midway raises and
leaves every previously published object as it was.

Published versions are immutable: a version file that exists remotely with other content is
refused before anything is uploaded (publish a new version number, or pass ``overwrite=True``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput

SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
_SKIPPED_PARTS = ("__pycache__",)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing slash; may be empty

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


@dataclass(frozen=True)
class PublishReport:
    location: S3Location
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]


def parse_s3_uri(uri: str, *, field: str = "destination") -> S3Location:
    """``s3://bucket/prefix`` -> S3Location, with a clear error for anything else."""
    allowed = "s3://BUCKET[/PREFIX] with a 3-63 character bucket name of a-z 0-9 . -"
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise InvalidInput(field, uri, allowed)
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket):
        raise InvalidInput(field, uri, allowed)
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidInput(field, uri, "a prefix without empty, '.' or '..' segments")
    return S3Location(bucket, prefix)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_order(repository: Path) -> list[str]:
    """Relative paths of the files to publish: per model, every version file first, config.pbtxt last."""
    if not repository.is_dir():
        raise InvalidInput("repository", str(repository), "an existing model repository folder")
    ordered: list[str] = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [
            p
            for p in sorted(model_dir.rglob("*"))
            if p.is_file()
            and not any(
                part in _SKIPPED_PARTS or part.startswith(".") for part in p.relative_to(repository).parts
            )
            and p.suffix != ".pyc"
        ]
        config = [p for p in files if p.parent == model_dir and p.name == "config.pbtxt"]
        ordered += [p.relative_to(repository).as_posix() for p in files if p not in config]
        ordered += [p.relative_to(repository).as_posix() for p in config]
    if not ordered:
        raise InvalidInput("repository", str(repository), "a folder holding at least one model")
    return ordered


def _remote_sha256(s3: Any, bucket: str, key: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    value: str | None = head.get("Metadata", {}).get(SHA256_METADATA)
    return value


def _check_bucket(s3: Any, location: S3Location) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=location.bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise InvalidInput(
                "destination", location.uri, "a bucket that exists (create it first)"
            ) from None
        raise


def _verify(s3: Any, bucket: str, key: str, expected: str) -> None:
    """Read the object back and hash what S3 actually stored."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(1 << 20), b""):
        digest.update(chunk)
    if digest.hexdigest() != expected:
        raise RuntimeError(f"s3://{bucket}/{key}: stored sha256 {digest.hexdigest()} differs from {expected}")


def publish_repository(
    repository: Path,
    destination: str | S3Location,
    *,
    s3: Any | None = None,
    endpoint_url: str | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> PublishReport:
    """Upload ``repository`` under ``destination``; see the module docstring for the guarantees."""
    location = destination if isinstance(destination, S3Location) else parse_s3_uri(destination)
    order = upload_order(repository)
    if s3 is None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint_url)
    _check_bucket(s3, location)
    local = {relative: sha256_of(repository / relative) for relative in order}
    remote = {relative: _remote_sha256(s3, location.bucket, location.key(relative)) for relative in order}
    changed_versions = [
        r
        for r in order
        if not r.endswith("/config.pbtxt") and remote[r] is not None and remote[r] != local[r]
    ]
    if changed_versions and not overwrite:
        raise InvalidInput(
            "repository",
            changed_versions,
            "files of versions not yet published: published versions are immutable "
            "(use a new version number, or overwrite=True)",
        )
    uploaded: list[str] = []
    skipped: list[str] = []
    for number, relative in enumerate(order, start=1):
        key = location.key(relative)
        digest = local[relative]
        if remote[relative] == digest:
            skipped.append(relative)
            if progress:
                progress(f"[{number}/{len(order)}] unchanged {relative}")
            continue
        s3.upload_file(
            str(repository / relative),
            location.bucket,
            key,
            ExtraArgs={"Metadata": {SHA256_METADATA: digest}},
        )
        _verify(s3, location.bucket, key, digest)
        uploaded.append(relative)
        if progress:
            progress(f"[{number}/{len(order)}] uploaded {relative}")
    return PublishReport(location, tuple(uploaded), tuple(skipped))
