"""Publish a local Triton model repository to S3, safely for readers that poll it.

Each file goes up with its sha256 in the object metadata (and as S3's own SHA-256 checksum, which S3
verifies on receipt) and is read back and hashed after upload; files whose key already holds the same
sha256 are skipped, so publishing is idempotent. Within a model, the version folders go first and
``config.pbtxt`` last: a reader never sees a config that points at a version whose files are still
missing. A failure midway raises, leaves every previously published object as it was, and removes the
objects this run added for the model it was on, so no half-uploaded version folder stays behind for
Triton's "latest version" policy to pick.

Published versions are immutable: a version file that exists remotely with other content is
refused before anything is uploaded (publish a new version number, or pass ``overwrite=True``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput

SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
_CONFIG = "config.pbtxt"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """S3 holds other bytes than the file that was uploaded."""


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
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise InvalidInput(field, uri, "s3://BUCKET[/PREFIX]")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidInput(
            field, uri, "s3://BUCKET[/PREFIX] with a 3-63 character bucket name of a-z 0-9 . - (S3's rules)"
        )
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise InvalidInput(field, uri, "a prefix without empty, '.' or '..' segments")
    return S3Location(bucket, prefix)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _publishable(path: Path, repository: Path) -> bool:
    # Hidden files (an interrupted build's staging folder) and Python's caches are not the model.
    parts = path.relative_to(repository).parts
    return (
        path.is_file()
        and path.suffix != ".pyc"
        and not any(part == "__pycache__" or part.startswith(".") for part in parts)
    )


def upload_order(repository: Path) -> list[str]:
    """Relative paths of the files to publish: per model, every version file first, config.pbtxt last.

    Each model folder must hold a config.pbtxt and at least one numbered version folder with files:
    anything less would publish a model Triton cannot load.
    """
    if not repository.is_dir():
        raise InvalidInput("repository", str(repository), "an existing model repository folder")
    ordered: list[str] = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [
            p.relative_to(repository).as_posix()
            for p in sorted(model_dir.rglob("*"))
            if _publishable(p, repository)
        ]
        config = f"{model_dir.name}/{_CONFIG}"
        has_version = any(f.split("/")[1].isdigit() for f in files if f.count("/") >= 2)
        if config not in files or not has_version:
            raise InvalidInput(
                "repository",
                f"{repository}/{model_dir.name}",
                "model folders each holding config.pbtxt and a numbered version folder of files",
            )
        ordered += [f for f in files if f != config] + [config]
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
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            raise InvalidInput(
                "destination", location.uri, "a bucket that exists (create it first)"
            ) from None
        raise


def _verify(s3: Any, bucket: str, key: str, expected: str) -> None:
    """Read the object back: its bytes and its metadata must both say ``expected``."""
    response = s3.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    for chunk in iter(lambda: response["Body"].read(_CHUNK), b""):
        digest.update(chunk)
    stored = response.get("Metadata", {}).get(SHA256_METADATA)
    if digest.hexdigest() != expected or stored != expected:
        raise IntegrityError(
            f"s3://{bucket}/{key}: read back with sha256 {digest.hexdigest()} (metadata {stored}), "
            f"uploaded {expected}"
        )


def _remove(s3: Any, bucket: str, keys: list[str], error: BaseException) -> None:
    """Delete what a failed run added for its model, and say on ``error`` what happened to it."""
    left = []
    for key in keys:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except Exception:
            left.append(key)
    if left:
        error.add_note(f"could not remove these objects of the incomplete upload; delete them: {left}")
    elif keys:
        error.add_note(f"removed the {len(keys)} object(s) of the incomplete upload")


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
        r for r in order if not r.endswith(f"/{_CONFIG}") and remote[r] is not None and remote[r] != local[r]
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
    added: list[str] = []  # keys new to the bucket since the current model's first file
    current_model = ""
    for number, relative in enumerate(order, start=1):
        model = relative.split("/", 1)[0]
        if model != current_model:
            current_model, added = model, []  # the previous model is complete: its config is up
        digest = local[relative]
        if remote[relative] == digest:
            skipped.append(relative)
            if progress:
                progress(f"[{number}/{len(order)}] unchanged {relative}")
            continue
        key = location.key(relative)
        if remote[relative] is None:
            added.append(key)
        try:
            s3.upload_file(
                str(repository / relative),
                location.bucket,
                key,
                ExtraArgs={"Metadata": {SHA256_METADATA: digest}, "ChecksumAlgorithm": "SHA256"},
            )
            _verify(s3, location.bucket, key, digest)
        except BaseException as error:  # Ctrl-C too: a half-uploaded version must not stay behind
            _remove(s3, location.bucket, added, error)
            raise
        uploaded.append(relative)
        if progress:
            progress(f"[{number}/{len(order)}] uploaded {relative}")
    return PublishReport(location, tuple(uploaded), tuple(skipped))
