"""Publish a local Triton model repository to S3, safely for readers that poll it.

Each file goes up with its sha256 in the object metadata (and as S3's own SHA-256 checksum, which S3
verifies on receipt) and is read back and hashed after upload; files whose key already holds the same
sha256 are skipped, so publishing is idempotent. Within a model, the version folders go first and
``config.pbtxt`` last: a reader never sees a config that points at a version whose files are still
missing. A failure midway raises, leaves every previously published object as it was, and removes the
objects this run added for the model it was on, so no half-uploaded version folder stays behind for
Triton's "latest version" policy to pick.

Before anything is uploaded the repository is checked as Triton would load it: every model folder
has a config.pbtxt that parses (its name matching the folder), every version folder is numbered from
1 and holds the files its backend loads, and no path is a link leading out of the repository. The
rollback of a failed run is retried for ``ROLLBACK_DEADLINE_S``, so a network blip that broke the
upload does not also leave its debris behind.

Published versions are immutable: a version file that exists remotely with other content, or a
changed config.pbtxt that comes with no new version (it would change how the published versions
are served), is refused before anything is uploaded (publish a new version number, or pass
``overwrite=True``). Last, each model gets a manifest (every file's sha256) that
``verify_published`` checks the bucket against, object by object.
"""

from __future__ import annotations

import hashlib
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_cache import (
    MANIFEST,
    SHA256_METADATA,
    CacheError,
    parse_manifest,
    render_manifest,
    sha256_of,
)
from inferstack.infra.model_manifest import CONFIG as _CONFIG
from inferstack.infra.model_manifest import (
    links_out,
    model_dirs,
    publishable,
    version_policy,
)
from inferstack.infra.prefixes import check_prefix

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CHUNK = 1 << 20
ROLLBACK_DEADLINE_S = 30.0


class IntegrityError(RuntimeError):
    """S3 holds other bytes than the file that was uploaded."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix, as an ``s3://`` URI."""

    bucket: str
    prefix: str  # without leading or trailing slash; may be empty

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


@dataclass(frozen=True)
class PublishReport:
    """What a publish uploaded and what it skipped as unchanged."""

    location: S3Location
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    pruned: tuple[str, ...] = ()


def parse_s3_uri(uri: str, *, field: str = "destination") -> S3Location:
    """``s3://bucket/prefix`` -> S3Location, with a clear error for anything else."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise InvalidInput(field, uri, "s3://BUCKET[/PREFIX]")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidInput(
            field, uri, "s3://BUCKET[/PREFIX] with a 3-63 character bucket name of a-z 0-9 . - (S3's rules)"
        )
    prefix = prefix.removesuffix("/")
    if prefix:
        try:
            check_prefix(prefix)  # the stack's own check: what is published here, a service can read
        except InvalidInput as error:
            raise InvalidInput(field, uri, f"s3://BUCKET[/PREFIX] with {error.allowed}") from None
    return S3Location(bucket, prefix)


def check_repository(repository: Path) -> None:
    """Raise InvalidInput unless Triton could load every model of ``repository`` as it stands."""
    from inferstack.serving.models.config import parse_config
    from inferstack.serving.models.repository import needed_files
    from inferstack.serving.models.specs import MODEL_FILE

    if not repository.is_dir():
        raise InvalidInput("repository", str(repository), "an existing model repository folder")
    outside = links_out(repository)
    if outside:
        raise InvalidInput("repository", outside, "files inside the repository (no links leading out of it)")
    models = model_dirs(repository)
    if not models:
        raise InvalidInput("repository", str(repository), "a folder holding at least one model")
    for model_dir in models:
        config_path = model_dir / _CONFIG
        if not config_path.is_file():
            raise InvalidInput(
                "repository", f"{repository}/{model_dir.name}", f"a model folder holding {_CONFIG}"
            )
        config = parse_config(config_path.read_text(errors="replace"), folder=model_dir.name)
        numbered = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if not numbered:
            raise InvalidInput(
                "repository",
                f"{repository}/{model_dir.name}",
                "model folders each holding a numbered version folder",
            )
        for version in numbered:
            missing = [f for f in needed_files(config) if not (version / f).is_file()]
            if int(version.name) < 1 or missing:
                raise InvalidInput(
                    f"{model_dir.name}/{version.name}",
                    sorted(p.name for p in version.iterdir()),
                    f"a version folder numbered from 1 holding {' and '.join(needed_files(config))}",
                )
            check_torchscript(version / MODEL_FILE, field=f"{model_dir.name}/{version.name}/{MODEL_FILE}")
        policy = config.version_policy
        if policy.WhichOneof("policy_choice") == "specific":
            present = sorted(int(p.name) for p in numbered)
            lacking = sorted(set(policy.specific.versions) - set(present))
            if lacking:
                raise InvalidInput(
                    f"{model_dir.name}/{_CONFIG} version_policy.specific.versions",
                    list(policy.specific.versions),
                    f"versions the repository holds: {present} ({lacking} missing: Triton would not load it)",
                )


def check_torchscript(path: Path, *, field: str) -> None:
    """``path`` is a TorchScript archive (what ``torch.jit.save`` writes: a zip of code and data
    pickles), not any file named like one; the archive's own loading is Triton's and the smoke's."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any(n.endswith("/data.pkl") for n in names) or not any("/code/" in n for n in names):
        raise InvalidInput(
            field, f"{path.stat().st_size} bytes", "a TorchScript archive, as torch.jit.save writes it"
        )


def upload_order(repository: Path, *, served_only: bool = False) -> list[str]:
    """Relative paths of the files to publish: per model, every version file first, config.pbtxt last.

    The repository is checked first (``check_repository``): anything less would publish a model
    Triton cannot load. ``served_only``: only the versions each model's version_policy serves (Triton
    copies every version folder of the prefix into the pod's cache, served or not).
    """
    check_repository(repository)
    ordered: list[str] = []
    for model_dir in model_dirs(repository):
        present = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        served = version_policy((model_dir / _CONFIG).read_text(errors="replace")).served(present)
        files = [
            p.relative_to(repository).as_posix()
            for p in sorted(model_dir.rglob("*"))
            if publishable(p, repository)
            and (not served_only or p.relative_to(model_dir).parts[0] in {str(v) for v in served})
        ]
        config = f"{model_dir.name}/{_CONFIG}"
        ordered += [f for f in files if f != config] + [config]
    return ordered


def _prune(s3: Any, location: S3Location, model: str, keep: set[str]) -> list[str]:
    """Delete the objects of ``model``'s folder that its new manifest does not list (run after the
    manifest is up: a pod starting now copies only what the manifest names)."""
    folder = location.key(f"{model}/")
    stale: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=folder):
        stale += [
            o["Key"]
            for o in page.get("Contents", [])
            if o["Key"].removeprefix(folder) not in keep | {MANIFEST}
        ]
    for key in stale:
        s3.delete_object(Bucket=location.bucket, Key=key)
    return [key.removeprefix(location.key("")) for key in stale]


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


def _read_sha256(s3: Any, bucket: str, key: str) -> tuple[str, str | None]:
    """The sha256 of an object's bytes, and the one its metadata claims."""
    response = s3.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest(), response.get("Metadata", {}).get(SHA256_METADATA)


def _verify(s3: Any, bucket: str, key: str, expected: str) -> None:
    """Read the object back: its bytes and its metadata must both say ``expected``."""
    actual, stored = _read_sha256(s3, bucket, key)
    if actual != expected or stored != expected:
        raise IntegrityError(
            f"s3://{bucket}/{key}: read back with sha256 {actual} (metadata {stored}), uploaded {expected}"
        )


def _gone(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
    return False


def _remove(s3: Any, bucket: str, keys: list[str], error: BaseException, deadline_s: float) -> None:
    """Delete what a failed run added for its model, retrying for ``deadline_s``; say so on ``error``.

    Each key is deleted and then looked up again: a request the failure cut off may still land
    after the delete (a stalled server answers its backlog when it wakes up).
    """
    left = list(keys)
    deadline = time.monotonic() + deadline_s
    pause = 0.25
    while left:
        still = []
        for key in left:
            try:
                s3.delete_object(Bucket=bucket, Key=key)
                if not _gone(s3, bucket, key):
                    still.append(key)
            except Exception:
                still.append(key)
        left = still
        if not left or time.monotonic() + pause > deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 4.0)
    if left:
        error.add_note(f"could not remove these objects of the incomplete upload; delete them: {left}")
    elif keys:
        error.add_note(f"removed the {len(keys)} object(s) of the incomplete upload")


def _manifest(repository: Path, model: str, order: list[str], local: dict[str, str]) -> bytes:
    """Every file's sha256 and the versions the model's policy serves: what a node cache fetches."""
    files = {r.split("/", 1)[1]: local[r] for r in order if r.split("/", 1)[0] == model}
    versions = sorted({int(f.split("/", 1)[0]) for f in files if f.split("/", 1)[0].isdigit()})
    served = version_policy((repository / model / _CONFIG).read_text()).served(versions)
    return render_manifest(model, files, served)


def _put_manifest(s3: Any, location: S3Location, model: str, content: bytes) -> None:
    digest = hashlib.sha256(content).hexdigest()
    key = location.key(f"{model}/{MANIFEST}")
    s3.put_object(
        Bucket=location.bucket,
        Key=key,
        Body=content,
        Metadata={SHA256_METADATA: digest},
        ChecksumAlgorithm="SHA256",
    )
    _verify(s3, location.bucket, key, digest)


def _refused_changes(order: list[str], local: dict[str, str], remote: dict[str, str | None]) -> list[str]:
    """Published files this run would change: version files, and configs that come with no new version."""
    published = {tuple(r.split("/")[:2]) for r in order if remote[r] is not None}
    versions = {tuple(r.split("/")[:2]) for r in order if not r.endswith(f"/{_CONFIG}")}
    with_new_version = {model for model, version in versions - published}
    changed = [r for r in order if remote[r] is not None and remote[r] != local[r]]
    return [r for r in changed if not r.endswith(f"/{_CONFIG}") or r.split("/")[0] not in with_new_version]


def publish_repository(
    repository: Path,
    destination: str | S3Location,
    *,
    s3: Any | None = None,
    endpoint_url: str | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    rollback_deadline_s: float = ROLLBACK_DEADLINE_S,
    served_only: bool = False,
    prune: bool = False,
) -> PublishReport:
    """Upload ``repository`` under ``destination``; see the module docstring for the guarantees.

    ``served_only``: only the versions each model's policy serves; ``prune``: then delete what the new
    manifests do not list (versions outside the policy, files of versions no longer built), so the
    prefix Triton copies holds only what it serves."""
    location = destination if isinstance(destination, S3Location) else parse_s3_uri(destination)
    order = upload_order(repository, served_only=served_only)
    if s3 is None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint_url)
    _check_bucket(s3, location)
    local = {relative: sha256_of(repository / relative) for relative in order}
    remote = {relative: _remote_sha256(s3, location.bucket, location.key(relative)) for relative in order}
    refused = _refused_changes(order, local, remote)
    if refused and not overwrite:
        raise InvalidInput(
            "repository",
            refused,
            "files of versions not yet published: published versions and their config are immutable "
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
            _remove(s3, location.bucket, added, error, rollback_deadline_s)
            raise
        uploaded.append(relative)
        if progress:
            progress(f"[{number}/{len(order)}] uploaded {relative}")
    pruned: list[str] = []
    for model in sorted({r.split("/", 1)[0] for r in order}):
        _put_manifest(s3, location, model, _manifest(repository, model, order, local))
        if prune:
            keep = {r.split("/", 1)[1] for r in order if r.split("/", 1)[0] == model}
            for key in _prune(s3, location, model, keep):
                pruned.append(key)
                if progress:
                    progress(f"pruned {key}")
    return PublishReport(location, tuple(uploaded), tuple(skipped), tuple(pruned))


def verify_published(location: S3Location, *, s3: Any) -> list[str]:
    """What in ``location`` disagrees with its manifests (empty: every object is what was published).

    Each manifested object is read and hashed; files in a version folder that no manifest lists,
    and models without a manifest, are reported too.
    """
    _check_bucket(s3, location)
    base = f"{location.prefix}/" if location.prefix else ""
    listed: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=base):
        listed += [o["Key"].removeprefix(base) for o in page.get("Contents", [])]
    models = sorted({key.split("/", 1)[0] for key in listed if "/" in key})
    problems: list[str] = []
    if not models:
        return [f"{location.uri}: no models"]
    for model in models:
        if f"{model}/{MANIFEST}" not in listed:
            problems.append(
                f"{model}: no {MANIFEST} (not published by inferstack, or cut off before the end)"
            )
            continue
        key = location.key(f"{model}/{MANIFEST}")
        try:
            manifest = parse_manifest(
                s3.get_object(Bucket=location.bucket, Key=key)["Body"].read(),
                where=f"s3://{location.bucket}/{key}",
            )
        except CacheError as error:
            problems.append(str(error))
            continue
        expected = manifest.sha256
        for relative, want in sorted(expected.items()):
            key = location.key(f"{model}/{relative}")
            if f"{model}/{relative}" not in listed:
                problems.append(f"{model}/{relative}: missing")
                continue
            actual, _ = _read_sha256(s3, location.bucket, key)
            if actual != want:
                problems.append(f"{model}/{relative}: sha256 {actual}, manifest says {want}")
        for key in listed:
            inside = key.split("/", 1)[1] if key.startswith(f"{model}/") else ""
            if inside and inside not in expected and inside != MANIFEST:
                problems.append(f"{model}/{inside}: not in the manifest")
    return problems
