"""The node-local model cache: what a pod needs from S3, fetched once per node, verified, in parallel.
(One file, longer than 450 lines: the pod runs it from a ConfigMap, where it can import no sibling.)

A fill runs before Triton starts (the pod's init container; a step of ``local up``). For each model it
waits for the publish manifest (``inferstack-manifest.json``, written last by a publish), keeps only the
files of the versions the model's version policy serves, and then, per file:

- the cache holds blobs named by their sha256 (``blobs/ab/abcd...``), so a file another pod on the node
  already fetched is reused, whichever model or prefix it came from;
- a blob is used as it is when nothing has written to it since its bytes last hashed to its name
  (its size, mtime and inode are what they were then: a warm start reads and downloads nothing);
  otherwise it is hashed again, and one that does not match its name (a hand edit, a torn write) is
  removed and fetched again. A change that leaves size, mtime and inode as they were (a bit flipped
  under the file system) is not caught: delete ``verified/`` to have every blob hashed on next use;
- a missing blob is downloaded with ranged GETs in parallel into a temporary name, hashed, and renamed
  into place: a reader never sees half a file, a crash leaves only a temporary name behind;
- one writer per blob (``fcntl.flock`` on ``locks/<sha256>``): two pods wanting the same file fetch it once.

Then the pod's own repository folder is assembled from the blobs (a hard link where the cache and the
folder share a mount, a copy otherwise) and Triton loads from local disk; it never talks to S3.
The cache is bounded: after a fill, least recently used blobs (atime, set on every use) go until
the cache fits its budget; the files the fill just used never go. Pruning takes the cache's lock
exclusively, fills hold it shared: a prune never removes a blob under a fill that wants it.

Standard library only, and Python 3.10 (the Triton image's ``python3``): the cluster runs this very
file from a ConfigMap, S3 requests signed here with SigV4, with the credentials IRSA's web-identity
token is exchanged for (the local runtime hands its emulator's credentials in directly).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "inferstack-manifest.json"  # per model, beside config.pbtxt; Triton ignores other files there
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
PART_BYTES = 16 << 20  # one ranged GET; S3 serves ranges of one object in parallel
PARALLEL = 8  # ranged GETs in flight at once, across all files
ATTEMPTS = 3  # per part, and per file whose bytes do not hash to the manifest's sha256
POLL_S = 5.0  # between looks at a model that is not complete yet
LOG_EVERY_S = 60.0  # an unchanged state is logged again this often, so the log shows the wait is alive
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # GET and HEAD carry no body
_VERSION_FILE = re.compile(r"^([0-9]+)/")


class CacheError(RuntimeError):
    """The fill cannot give Triton what the manifest lists: one line saying what and where."""


# --- the manifest (publish writes it, the fill and verify_published read it) ------------------------------


@dataclass(frozen=True)
class Manifest:
    """One model's published files: each path inside the model folder with its sha256, and the versions
    its version policy serves (None in manifests from before that was recorded: every version listed)."""

    model: str
    sha256: Mapping[str, str]
    served: tuple[int, ...] | None = None

    def versions(self) -> list[int]:
        """The version folders the manifest lists files in."""
        return sorted({int(m.group(1)) for m in map(_VERSION_FILE.match, self.sha256) if m is not None})

    def wanted(self) -> dict[str, str]:
        """The files Triton reads: config.pbtxt and the like, and the served versions' folders."""
        chosen = {}
        for relative, digest in self.sha256.items():
            version = _VERSION_FILE.match(relative)
            if version is None or self.served is None or int(version.group(1)) in self.served:
                chosen[relative] = digest
        return chosen


def render_manifest(model: str, sha256: Mapping[str, str], served: Sequence[int]) -> bytes:
    return json.dumps(
        {"model": model, "sha256": dict(sha256), "served": sorted(served)}, indent=1, sort_keys=True
    ).encode()


def parse_manifest(body: bytes, *, where: str) -> Manifest:
    """A manifest's bytes -> Manifest; CacheError naming ``where`` for anything malformed."""
    try:
        data = json.loads(body)
        files = data["sha256"]
        served = data.get("served")
        model = data["model"]
    except (ValueError, TypeError, KeyError) as error:
        raise CacheError(f"{where}: not an inferstack manifest ({error})") from None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.match(v) for k, v in files.items()
    ):
        raise CacheError(f"{where}: 'sha256' must map file paths to 64-hex-digit sha256 values")
    unsafe = [k for k in files if k.startswith("/") or ".." in k.split("/") or not k]
    if unsafe:
        raise CacheError(f"{where}: paths outside the model folder: {unsafe}")
    if served is not None and not (
        isinstance(served, list) and all(isinstance(v, int) and v >= 1 for v in served)
    ):
        raise CacheError(f"{where}: 'served' must be a list of version numbers >= 1, got {served!r}")
    return Manifest(str(model), files, None if served is None else tuple(served))


def not_ready(manifest: Manifest | None, keys: Collection[str], versions: Sequence[int]) -> str | None:
    """Why a model is not complete in S3 (None: it is), from its manifest and the keys in its folder
    (relative to it); ``versions`` are those the pod must find served."""
    if manifest is None:
        return "no manifest yet"
    listed = manifest.versions()
    served = list(manifest.served) if manifest.served is not None else listed
    absent_versions = [v for v in versions if v not in served]
    if absent_versions:
        return f"the manifest serves versions {served}, the pod serves {list(versions)}"
    absent = sorted(set(manifest.wanted()) - set(keys))
    if absent:
        return f"{len(absent)} file(s) of the manifest not in the bucket: {absent[:5]}"
    # A version folder above every manifested one is a publish in progress: the next manifest may
    # serve it, and this one would be replaced under the fill.
    present = {int(m.group(1)) for m in map(_VERSION_FILE.match, keys) if m is not None}
    uploading = sorted(v for v in present if v > max(listed, default=0))
    if uploading:
        return f"version(s) {uploading} in the folder but not yet in the manifest: a publish in progress"
    return None


# --- S3, signed with SigV4 (the standard library has no AWS SDK) -----------------------------------------


@dataclass(frozen=True)
class Credentials:
    """AWS credentials that sign S3 requests: IRSA's in a pod, the emulator's locally."""

    access_key: str
    secret_key: str
    token: str | None = None


def _pod_credentials(env: Mapping[str, str], region: str) -> Credentials:
    """IRSA's: the one way a pod gets AWS credentials here (no static keys reach a pod)."""
    if env.get("AWS_ROLE_ARN") and env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return _web_identity(env, region)
    raise CacheError(
        "no AWS credentials: run with IRSA (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, set by EKS for a "
        "service account annotated with eks.amazonaws.com/role-arn)"
    )


def _web_identity(env: Mapping[str, str], region: str) -> Credentials:
    """IRSA: trade the projected service-account token for the role's credentials (an unsigned call)."""
    token = Path(env["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text().strip()
    form = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": env["AWS_ROLE_ARN"],
            "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME", "inferstack-model-cache"),
            "WebIdentityToken": token,
        }
    )
    endpoint = env.get("AWS_ENDPOINT_URL_STS") or f"https://sts.{region}.amazonaws.com"
    status, _, body = _request(
        endpoint, "POST", "/", {"content-type": "application/x-www-form-urlencoded"}, form.encode()
    )
    if status != 200:
        raise CacheError(
            f"STS AssumeRoleWithWebIdentity for {env['AWS_ROLE_ARN']}: HTTP {status} {body[:300]!r}"
        )
    found = {e.tag.rsplit("}", 1)[-1]: e.text or "" for e in ElementTree.fromstring(body).iter()}
    return Credentials(found["AccessKeyId"], found["SecretAccessKey"], found.get("SessionToken"))


def _request(
    endpoint: str, method: str, target: str, headers: Mapping[str, str], body: bytes, timeout_s: float = 60.0
) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(endpoint)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.netloc, timeout=timeout_s)
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    credentials: Credentials,
    region: str,
    method: str,
    host: str,
    path: str,
    query: str,
    when: time.struct_time,
) -> dict[str, str]:
    """The headers that sign an S3 request with no body (AWS Signature Version 4, service ``s3``).

    ``path`` is already URI-encoded (S3 signs it as sent, without encoding it twice); ``query`` is
    the canonical query string (sorted, encoded), empty for a plain GET.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", when)
    day = stamp[:8]
    headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, query, *(f"{n}:{headers[n]}" for n in names), "", ";".join(names), _EMPTY_SHA256]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{credentials.secret_key}".encode(), day), region), "s3"), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


@dataclass
class S3Reader:
    """GET and HEAD on one bucket: path-style on a given endpoint (moto), virtual-hosted on AWS."""

    bucket: str
    region: str
    credentials: Credentials
    endpoint: str | None = None
    timeout_s: float = 60.0
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def _base(self) -> tuple[str, str, str]:
        """(scheme, host, path prefix)"""
        if self.endpoint:
            parts = urllib.parse.urlsplit(self.endpoint)
            return parts.scheme, parts.netloc, f"/{self.bucket}"
        return "https", f"{self.bucket}.s3.{self.region}.amazonaws.com", ""

    def _connection(self) -> http.client.HTTPConnection:
        """One keep-alive connection per thread."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            scheme, host, _ = self._base()
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            connection = kind(host, timeout=self.timeout_s)
            self._local.connection = connection
        return connection

    def _send(
        self, method: str, key: str, extra: Mapping[str, str], query: Mapping[str, str] | None = None
    ) -> http.client.HTTPResponse:
        _, host, prefix = self._base()
        path = f"{prefix}/{urllib.parse.quote(key, safe='/~')}"
        canonical = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted((query or {}).items())
        )
        headers = {
            **sigv4_headers(self.credentials, self.region, method, host, path, canonical, time.gmtime()),
            **extra,
        }
        connection = self._connection()
        try:
            connection.request(method, f"{path}?{canonical}" if canonical else path, headers=headers)
            return connection.getresponse()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._local.connection = None
            raise

    def list_keys(self, prefix: str) -> set[str]:
        """Every key under ``prefix``, relative to it (ListObjectsV2, page after page)."""
        keys: set[str] = set()
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            response = self._send("GET", "", {}, query)
            body = response.read()
            if response.status != 200:
                raise CacheError(
                    f"listing s3://{self.bucket}/{prefix}: HTTP {response.status} {body[:200]!r}"
                )
            root = ElementTree.fromstring(body)
            keys |= {
                (e.text or "").removeprefix(prefix) for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Key"
            }
            token = next(
                (e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "NextContinuationToken"), ""
            )
            if not token:
                return keys

    def size(self, key: str) -> int | None:
        """The object's size; None when there is no such object."""
        response = self._send("HEAD", key, {})
        response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise CacheError(f"HEAD s3://{self.bucket}/{key}: HTTP {response.status}")
        return int(response.getheader("content-length", "0"))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes (``start``..``end`` inclusive when given)."""
        extra = {} if start is None else {"range": f"bytes={start}-{end}"}
        response = self._send("GET", key, extra)
        body = response.read()
        if response.status not in (200, 206):
            raise CacheError(f"GET s3://{self.bucket}/{key}: HTTP {response.status} {body[:200]!r}")
        return body

    def get_into(
        self, key: str, handle: int, start: int, end: int, progress: Callable[[int], None] | None = None
    ) -> None:
        """Write bytes ``start``..``end`` of the object at the same offsets of the open file ``handle``,
        telling ``progress`` how far the written bytes reach after each chunk."""
        response = self._send("GET", key, {"range": f"bytes={start}-{end}"})
        if response.status != 206:
            body = response.read()
            raise CacheError(
                f"GET s3://{self.bucket}/{key} bytes {start}-{end}: HTTP {response.status} {body[:200]!r}"
            )
        offset = start
        while chunk := response.read(_CHUNK):
            os.pwrite(handle, chunk, offset)
            offset += len(chunk)
            if progress is not None:
                progress(offset)
        if offset != end + 1:
            raise CacheError(f"GET s3://{self.bucket}/{key} bytes {start}-{end}: cut off at {offset}")


class _Written:
    """How far each part of a download has reached in the file, for the hash that follows behind."""

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self._changed = threading.Condition()
        self._reached = {start: start for start, _ in ranges}
        self.rewritten = False  # a part was retried: bytes the hash read may have been written again

    def advance(self, start: int, offset: int) -> None:
        with self._changed:
            self._reached[start] = max(self._reached[start], offset)
            self._changed.notify_all()

    def poke(self, _: object = None) -> None:
        with self._changed:
            self._changed.notify_all()

    def beyond(self, start: int, hashed: int, part: concurrent.futures.Future[None]) -> int:
        """Where part ``start``'s written bytes reach once past ``hashed``, or the part has ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._reached[start] > hashed or part.done())
            return self._reached[start]


def reader_from_env(
    bucket: str,
    *,
    region: str | None = None,
    endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
) -> S3Reader:
    env = os.environ if env is None else env
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise CacheError("no region: pass --region or set AWS_REGION")
    endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    return S3Reader(bucket, region, _pod_credentials(env, region), endpoint)


# --- the cache ------------------------------------------------------------------------------------------


@dataclass
class FillReport:
    """What one fill did: blobs downloaded, reused, fetched again after a failed check, pruned."""

    downloaded: list[str] = field(default_factory=list)  # sha256 of blobs fetched from S3
    reused: list[str] = field(default_factory=list)  # sha256 of blobs already on the node
    refetched: list[str] = field(default_factory=list)  # cached blobs that failed their hash
    pruned: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(handle, mode)
        yield
    finally:
        os.close(handle)  # closing releases the lock


@dataclass
class ModelCache:
    """The cache folder of one node (``root``), bounded to ``max_bytes``."""

    root: Path
    max_bytes: int
    parallel: int = PARALLEL
    part_bytes: int = PART_BYTES
    progress: Callable[[str], None] | None = None

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def fill(
        self,
        s3: S3Reader,
        prefix: str,
        models: Sequence[str],
        repository: Path,
        *,
        wait_s: float = 0.0,
        versions: Mapping[str, Sequence[int]] | None = None,
    ) -> FillReport:
        """``models`` (their served versions) from ``s3``/``prefix`` into ``repository``, via the cache.
        ``versions``: what a model's manifest must serve (a new release's pod must not start on the
        previous release's manifest)."""
        started = time.monotonic()
        report = FillReport()
        manifests = self.await_manifests(s3, prefix, models, wait_s=wait_s, versions=versions or {})
        wanted = {d for m in manifests for d in m.wanted().values()}
        keys = {d: f"{_join(prefix, m.model)}/{r}" for m in manifests for r, d in m.wanted().items()}
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / "cache.lock", fcntl.LOCK_SH):
            sizes = self._sizes(s3, keys)
            if sum(sizes.values()) > self.max_bytes:
                raise CacheError(
                    f"models {list(models)} need {sum(sizes.values()) / 2**30:.2f} GiB, more than the "
                    f"cache's {self.max_bytes / 2**30:.2f} GiB: raise the node cache size"
                )
            self._fetch_all(s3, keys, sizes, report)
            for manifest in manifests:
                self._assemble(manifest, repository / manifest.model)
        report.pruned = self.prune(keep=wanted)
        report.seconds = time.monotonic() - started
        self._say(
            f"model cache: {len(report.downloaded)} downloaded ({report.bytes_downloaded / 2**20:.0f} MiB), "
            f"{len(report.reused)} reused, {len(report.refetched)} refetched after a failed check, "
            f"{len(report.pruned)} pruned, in {report.seconds:.1f} s"
        )
        return report

    def model_state(
        self, s3: S3Reader, prefix: str, model: str, versions: Sequence[int]
    ) -> tuple[Manifest | None, str | None]:
        """One look at ``model`` in the bucket: its manifest once it is complete, else why it is not."""
        folder = f"{_join(prefix, model)}/"
        where = f"s3://{s3.bucket}/{folder}{MANIFEST}"
        try:
            body = s3.get(f"{folder}{MANIFEST}")
        except CacheError as error:
            if "HTTP 404" not in str(error):
                raise
            body = None
        keys = s3.list_keys(folder)
        manifest = None if body is None else parse_manifest(body, where=where)
        if manifest is not None and manifest.model != model:
            raise CacheError(f"{where}: the manifest of {manifest.model!r}, not {model!r}")
        why = not_ready(manifest, keys, versions)
        # The count makes each state of a publish in progress a line of its own in the log.
        return (
            (manifest, None) if why is None else (None, f"{why} ({len(keys)} object(s) in the model folder)")
        )

    def await_manifests(
        self,
        s3: S3Reader,
        prefix: str,
        models: Sequence[str],
        *,
        wait_s: float = 0.0,
        versions: Mapping[str, Sequence[int]],
        poll_s: float = POLL_S,
    ) -> list[Manifest]:
        """Every model's manifest once the model is complete in S3, polled for up to ``wait_s``. What it
        waits for is logged when it changes and every LOG_EVERY_S; an S3 error is logged and retried
        (IAM and the bucket may still be settling on a first deploy) until the deadline."""
        deadline = time.monotonic() + wait_s
        found: dict[str, Manifest] = {}
        said: dict[str, tuple[str, float]] = {}
        while True:
            for model in [m for m in models if m not in found]:
                try:
                    manifest, why = self.model_state(s3, prefix, model, versions.get(model, ()))
                except (CacheError, OSError, http.client.HTTPException, ElementTree.ParseError) as error:
                    manifest, why = None, f"{type(error).__name__}: {error}"
                if manifest is not None:
                    found[model] = manifest
                    self._say(f"found s3://{s3.bucket}/{_join(prefix, model)}/ complete")
                    continue
                assert why is not None
                last = said.get(model)
                if last is None or last[0] != why or time.monotonic() - last[1] >= LOG_EVERY_S:
                    self._say(f"waiting for s3://{s3.bucket}/{_join(prefix, model)}/{MANIFEST}: {why}")
                    said[model] = (why, time.monotonic())
            waiting = [m for m in models if m not in found]
            if not waiting:
                return [found[m] for m in models]
            if time.monotonic() >= deadline:
                raise CacheError(
                    "; ".join(f"s3://{s3.bucket}/{_join(prefix, m)}/: {said[m][0]}" for m in waiting)
                    + f", after {wait_s:.0f} s (an inferstack publish writes the manifest last)"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def _sizes(self, s3: S3Reader, keys: Mapping[str, str]) -> dict[str, int]:
        sizes = {}
        for digest, key in keys.items():
            path = self.blob(digest)
            size = path.stat().st_size if path.exists() else s3.size(key)
            if size is None:
                raise CacheError(f"s3://{s3.bucket}/{key}: listed in the manifest, missing from the bucket")
            sizes[digest] = size
        return sizes

    def _fetch_all(
        self, s3: S3Reader, keys: Mapping[str, str], sizes: Mapping[str, int], report: FillReport
    ) -> None:
        """Every blob checked or fetched; parts of all files share one pool of ``parallel`` GETs."""
        with (
            concurrent.futures.ThreadPoolExecutor(self.parallel, thread_name_prefix="cache-get") as parts,
            concurrent.futures.ThreadPoolExecutor(max(1, len(keys)), thread_name_prefix="file") as files,
        ):
            futures = [
                files.submit(self._ensure, s3, key, digest, sizes[digest], parts, report)
                for digest, key in keys.items()
            ]
            for future in futures:
                future.result()

    def _ensure(
        self,
        s3: S3Reader,
        key: str,
        digest: str,
        size: int,
        parts: concurrent.futures.ThreadPoolExecutor,
        report: FillReport,
    ) -> None:
        path = self.blob(digest)
        with _locked(self.root / "locks" / digest, fcntl.LOCK_EX):  # one writer per blob
            if path.exists():
                if self._unchanged_since_verified(path) or sha256_of(path) == digest:
                    self._verified(path)
                    report.reused.append(digest)
                    return
                self._say(f"model cache: {path} does not hash to its name; fetching it again")
                path.unlink()
                report.refetched.append(digest)
            for attempt in range(1, ATTEMPTS + 1):
                temporary, actual = self._download(s3, key, size, parts)
                if actual == digest:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(temporary, 0o444)
                    os.replace(temporary, path)  # atomic: readers see the whole file or none
                    self._verified(path)
                    report.downloaded.append(digest)
                    report.bytes_downloaded += size
                    return
                temporary.unlink()
                self._say(f"s3://{s3.bucket}/{key}: sha256 {actual}, manifest says {digest} (try {attempt})")
        raise CacheError(
            f"s3://{s3.bucket}/{key}: sha256 never matched the manifest's {digest} in {ATTEMPTS} tries"
        )

    def _download(
        self, s3: S3Reader, key: str, size: int, parts: concurrent.futures.ThreadPoolExecutor
    ) -> tuple[Path, str]:
        """The object in a temporary file, and the sha256 of what arrived.

        Parts arrive in parallel; the hash follows them in order, reading back from the page cache each
        chunk as soon as it is written, so hashing runs beside the download (another core) instead of
        after it or in the way of the socket. A part that had to be retried may have rewritten bytes
        the hash already read: then the finished file is hashed again, whole.
        """
        staging = self.root / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=staging, prefix=".part-")
        ranges = [
            (start, min(start + self.part_bytes, size) - 1) for start in range(0, size, self.part_bytes)
        ]
        digest = hashlib.sha256()
        written = _Written(ranges)
        futures: list[concurrent.futures.Future[None]] = []
        try:
            os.ftruncate(handle, size)
            futures = [parts.submit(_part, s3, key, handle, start, end, written) for start, end in ranges]
            for future in futures:
                future.add_done_callback(written.poke)
            for (start, end), future in zip(ranges, futures, strict=True):
                hashed = start
                while hashed <= end:
                    reached = written.beyond(start, hashed, future)
                    if reached <= hashed:  # the part ended short of its range
                        future.result()  # its error is the download's
                        raise CacheError(f"s3://{s3.bucket}/{key}: bytes {start}-{end} stopped at {reached}")
                    for offset in range(hashed, reached, _CHUNK):
                        digest.update(os.pread(handle, min(_CHUNK, reached - offset), offset))
                    hashed = max(hashed, reached)
                future.result()
            actual = sha256_of(Path(name)) if written.rewritten else digest.hexdigest()
        except BaseException:
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)  # no part may still be writing once the descriptor closes
            os.close(handle)
            os.unlink(name)
            raise
        os.close(handle)
        return Path(name), actual

    def _assemble(self, manifest: Manifest, folder: Path) -> None:
        """The model folder Triton reads: every wanted file from its blob, built aside and renamed in."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{manifest.model}-", dir=folder.parent))
        for relative, digest in sorted(manifest.wanted().items()):
            target = building / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.blob(digest), target)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copyfile(self.blob(digest), target)  # another mount (a pod's emptyDir): copy
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(building, folder)

    def _stamp_file(self, blob: Path) -> Path:
        return self.root / "verified" / blob.name

    @staticmethod
    def _stamp(blob: Path) -> str:
        """What any write to the blob changes: size, modification time, inode (a replaced file)."""
        stat = blob.stat()
        return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ino}"

    def _unchanged_since_verified(self, blob: Path) -> bool:
        """The blob is as it was when its bytes last hashed to its name: a warm start reads nothing."""
        try:
            return self._stamp_file(blob).read_text() == self._stamp(blob)
        except FileNotFoundError:
            return False

    def _verified(self, blob: Path) -> None:
        """Record that the blob hashed to its name, and that it was just used (its access time, for the
        LRU; set explicitly, as the NVMe array is mounted noatime, and leaving the stamp's mtime be)."""
        stamp = self._stamp_file(blob)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(self._stamp(blob))
        os.utime(blob, ns=(time.time_ns(), blob.stat().st_mtime_ns))

    def usage(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every blob."""
        found = []
        for path in (self.root / "blobs").glob("*/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_atime, stat.st_size, path))
        return sorted(found, key=lambda entry: (entry[0], str(entry[2])))

    def prune(self, *, keep: Collection[str] = ()) -> list[str]:
        """Drop least recently used blobs until the cache fits ``max_bytes``; skipped while a fill runs
        (the next fill to finish prunes), never a blob in ``keep``."""
        handle = os.open(self.root / "cache.lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            for leftover in (self.root / "staging").glob(".part-*"):  # no fill runs: these are debris
                leftover.unlink(missing_ok=True)
            entries = self.usage()
            total = sum(size for _, size, _ in entries)
            pruned = []
            for _, size, path in entries:
                if total <= self.max_bytes:
                    break
                if path.name in keep:
                    continue
                path.unlink(missing_ok=True)
                (self.root / "locks" / path.name).unlink(missing_ok=True)
                self._stamp_file(path).unlink(missing_ok=True)
                total -= size
                pruned.append(path.name)
            return pruned
        finally:
            os.close(handle)


def _join(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def _part(s3: S3Reader, key: str, handle: int, start: int, end: int, written: _Written) -> None:
    """One ranged GET into the file, retried; a retry marks the download for a full re-hash."""
    for attempt in range(1, ATTEMPTS):
        try:
            s3.get_into(key, handle, start, end, lambda offset: written.advance(start, offset))
            return
        except (OSError, http.client.HTTPException, CacheError):
            written.rewritten = True
            time.sleep(0.5 * attempt)
    s3.get_into(key, handle, start, end, lambda offset: written.advance(start, offset))  # its error is ours


def parse_models(text: str) -> tuple[list[str], dict[str, list[int]]]:
    """``a,b:1+2`` -> the model names, and the versions each named one's manifest must serve."""
    models: list[str] = []
    versions: dict[str, list[int]] = {}
    for item in (i for i in text.split(",") if i):
        name, _, listed = item.partition(":")
        try:
            numbers = [int(v) for v in listed.split("+") if v]
        except ValueError:
            raise CacheError(f"--models {item!r}: NAME or NAME:V+V... with whole version numbers") from None
        models.append(name)
        if numbers:
            versions[name] = numbers
    return models, versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fill a model repository folder from S3 through the node cache."
    )
    parser.add_argument("--source", required=True, help="s3://BUCKET[/PREFIX], the published repository")
    parser.add_argument(
        "--models",
        required=True,
        help="comma-separated NAME or NAME:V+V...: the models, and the versions their manifests must serve",
    )
    parser.add_argument("--cache", required=True, type=Path, help="the node's cache folder")
    parser.add_argument("--repository", required=True, type=Path, help="the folder Triton loads from")
    parser.add_argument("--max-gib", required=True, type=float, help="the cache's size bound")
    parser.add_argument("--wait-s", default=0.0, type=float, help="how long to wait for a manifest")
    parser.add_argument("--parallel", default=PARALLEL, type=int)
    parser.add_argument("--region", default=None)
    parser.add_argument("--endpoint", default=None, help="an S3 endpoint other than AWS's (tests, moto)")
    options = parser.parse_args(argv)
    bucket, _, prefix = str(options.source).removeprefix("s3://").partition("/")
    try:
        if not str(options.source).startswith("s3://") or not bucket:
            raise CacheError(f"--source {options.source!r}: not s3://BUCKET[/PREFIX]")
        cache_root = options.cache
        with contextlib.suppress(OSError):
            cache_root.mkdir(parents=True, exist_ok=True)
        if not os.access(cache_root, os.W_OK):
            # A node without inferstack's bootstrap (Bottlerocket, another group): the kubelet made the
            # folder root-owned. Serve anyway, from a cache private to this pod, and say why.
            cache_root = options.repository / ".pod-cache"
            print(
                f"model cache: {options.cache} is not writable by uid {os.getuid()} (the node's bootstrap "
                f"creates it owned by Triton's user): using {cache_root}, not shared with other pods",
                file=sys.stderr,
            )
        deadline = time.monotonic() + options.wait_s
        while True:
            try:
                s3 = reader_from_env(bucket, region=options.region, endpoint=options.endpoint)
                break
            except (CacheError, OSError, http.client.HTTPException, ElementTree.ParseError) as error:
                # IRSA's role and trust may still be settling on a first deploy: retried within the wait.
                if time.monotonic() >= deadline:
                    raise CacheError(f"S3 credentials: {error}") from None
                print(f"model cache: S3 credentials: {error}; trying again", flush=True)
                time.sleep(POLL_S)
        cache = ModelCache(
            cache_root,
            int(options.max_gib * 2**30),
            parallel=options.parallel,
            progress=lambda line: print(line, flush=True),
        )
        models, versions = parse_models(options.models)
        print(
            f"model cache: waiting for the models {', '.join(models)} in {options.source} first",
            flush=True,
        )
        cache.fill(
            s3, prefix.strip("/"), models, options.repository, wait_s=options.wait_s, versions=versions
        )
        print("model cache: every model is complete and in place; Triton starts", flush=True)
    except (CacheError, OSError) as error:
        print(f"model cache: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
