"""Wait until a service's models are complete in S3: the first step of every Triton pod.

Triton 2.51 started with ``--model-control-mode=explicit --load-model=...`` against a prefix that
holds nothing yet prints ``repository path is not a valid directory`` and exits 1, and against a
model folder whose config or files are still on their way fails the load and exits too: the pod
would crash-loop. This script runs before Triton, as an init container in Triton's own image
(``python3 -c <this file> ...``), and exits 0 only once every model it is given has its manifest
(``inferstack-manifest.json``, written last by both publishers, see ``infra/model_manifest.py``)
listing the expected versions, and every file the manifest lists is in the bucket. Until then it
waits, logging ``waiting for s3://.../<model>/inferstack-manifest.json ...``, and never exits
non-zero: an S3 or credentials error is logged and retried, since IAM and the bucket may still be
settling on a first deploy. The pod stays in ``Init`` (not ready, not restarting).

Standard library only (Triton's image has ``python3`` and no AWS SDK): credentials come from the
pod's IRSA web identity (``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``, exchanged at STS, whose
endpoint ``AWS_ENDPOINT_URL_STS`` may override as for the AWS SDKs); requests are signed with SigV4.
EKS's pod identity webhook sets both variables and mounts the token in init containers as in the
others (its test pod ``rawPodWithInitContainer``).
The repository URI is Triton's own: ``s3://bucket/prefix`` or ``s3://http(s)://host:port/bucket/prefix``.

``wait_for_models`` is the extension point (a node-local cache fed from the manifest can hook in
there): it takes the target, the models and a ``fetch`` function, and returns once all are there.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from xml.etree import ElementTree

MANIFEST = "inferstack-manifest.json"  # infra/model_manifest.py's; a test holds them equal
POLL_S = 10.0
LOG_EVERY_S = 60.0  # an unchanged state is logged again this often, so the log shows it is alive
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Target:
    """Where a repository is: the S3 endpoint, the bucket and the key prefix (no slashes at its ends)."""

    endpoint: str  # scheme://host[:port]
    bucket: str
    prefix: str
    region: str
    path_style: bool  # custom endpoints: /bucket/key; AWS: bucket.s3.region.amazonaws.com/key

    def uri(self, key: str = "") -> str:
        where = "/".join(part for part in (self.bucket, self.prefix, key) if part)
        return f"s3://{where}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, key: str = "", query: Mapping[str, str] | None = None) -> str:
        path = f"/{self.bucket}/{key}" if self.path_style else f"/{key}"
        base = self.endpoint if self.path_style else self.endpoint.replace("://", f"://{self.bucket}.", 1)
        encoded = urllib.parse.quote(path, safe="/-_.~")
        return base + encoded + (f"?{_query(query)}" if query else "")


@dataclass(frozen=True)
class Model:
    """A model the pod waits for, and the versions it must find in the manifest."""

    name: str
    versions: tuple[int, ...] = ()  # empty: whatever the manifest lists


@dataclass(frozen=True)
class Credentials:
    """Temporary AWS credentials from the pod's web identity (IRSA), until they expire."""

    access_key: str
    secret_key: str
    token: str = ""
    expires: float = float("inf")  # epoch seconds


def _dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def parse_target(uri: str, region: str) -> Target:
    """Triton's ``--model-repository`` value (an S3 one) as a Target."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r}: not an s3:// repository")
    rest = uri.removeprefix("s3://")
    if rest.startswith(("http://", "https://")):
        scheme, _, rest = rest.partition("://")
        host, _, path = rest.partition("/")
        bucket, _, prefix = path.partition("/")
        return Target(f"{scheme}://{host}", bucket, prefix.strip("/"), region, path_style=True)
    bucket, _, prefix = rest.partition("/")
    endpoint = f"https://s3.{region}.{_dns_suffix(region)}"
    return Target(endpoint, bucket, prefix.strip("/"), region, path_style="." in bucket)


def parse_model(text: str) -> Model:
    """``name`` or ``name:1,2``: a model, and the versions its manifest must list."""
    name, _, versions = text.partition(":")
    return Model(name, tuple(int(v) for v in versions.split(",") if v))


# --- SigV4 -------------------------------------------------------------------------------------------


def _query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(
    method: str,
    url: str,
    *,
    region: str,
    credentials: Credentials,
    now: datetime.datetime,
    service: str = "s3",
) -> dict[str, str]:
    """The headers that authorize an empty-bodied request to ``url`` (AWS Signature Version 4)."""
    parts = urllib.parse.urlsplit(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {"host": parts.netloc, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    names = sorted(headers)
    pairs = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            _query(dict(pairs)),
            "".join(f"{name}:{headers[name].strip()}\n" for name in names),
            ";".join(names),
            _EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{credentials.secret_key}".encode(), day), region), service), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


# --- credentials -------------------------------------------------------------------------------------


def _http(url: str, headers: Mapping[str, str] | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}), data=data)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def web_identity_credentials(env: Mapping[str, str], region: str) -> Credentials:
    """IRSA: the pod's projected token exchanged for the role's temporary credentials at STS (an
    unsigned call: the token is the proof). EKS sets these variables in every container of a pod
    whose service account names a role."""
    missing_env = [name for name in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE") if not env.get(name)]
    if missing_env:
        raise OSError(
            f"no IRSA identity ({', '.join(missing_env)} unset): the pod's service account needs the "
            "eks.amazonaws.com/role-arn annotation"
        )
    with open(env["AWS_WEB_IDENTITY_TOKEN_FILE"]) as handle:  # rotated by the kubelet: read each time
        token = handle.read().strip()
    endpoint = env.get("AWS_ENDPOINT_URL_STS") or f"https://sts.{region}.{_dns_suffix(region)}"
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": env["AWS_ROLE_ARN"],
        "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME") or "inferstack-model-wait",
        "WebIdentityToken": token,
    }
    status, body = _http(
        f"{endpoint.rstrip('/')}/",
        {"Content-Type": "application/x-www-form-urlencoded"},
        _query(form).encode(),
    )
    if status != 200:
        raise OSError(f"STS AssumeRoleWithWebIdentity answered {status}: {body[:300]!r}")
    found = ElementTree.fromstring(body).find(f".//{_STS_NS}Credentials")
    if found is None:
        raise OSError(f"STS answer without credentials: {body[:300]!r}")

    def text(tag: str) -> str:
        return found.findtext(f"{_STS_NS}{tag}") or ""

    expires = datetime.datetime.fromisoformat(text("Expiration").replace("Z", "+00:00")).timestamp()
    return Credentials(text("AccessKeyId"), text("SecretAccessKey"), text("SessionToken"), expires)


# --- what is in the bucket ---------------------------------------------------------------------------

Fetch = Callable[[str, Mapping[str, str] | None], tuple[int, bytes]]  # (key, query) -> status, body


def missing(model: Model, manifest: bytes | None, keys: set[str]) -> str | None:
    """Why ``model`` is not complete (None: it is), from its manifest and the keys under its folder
    (relative to the model folder)."""
    if manifest is None:
        return "no manifest yet"
    try:
        files: dict[str, str] = json.loads(manifest)["sha256"]
    except (ValueError, KeyError, TypeError):
        return "the manifest is not inferstack's JSON"
    listed = sorted({int(p.split("/", 1)[0]) for p in files if p.split("/", 1)[0].isdigit()})
    wanted = [v for v in model.versions if v not in listed]
    if wanted:
        return f"the manifest lists versions {listed}, the pod serves {list(model.versions)}"
    absent = sorted(set(files) - keys)
    if absent:
        return f"{len(absent)} file(s) of the manifest not in the bucket: {absent[:5]}"
    # A version folder above every manifested one is a publish in progress: Triton's default policy
    # (the newest version) would load it half-uploaded.
    present = {int(k.split("/", 1)[0]) for k in keys if k.split("/", 1)[0].isdigit()}
    uploading = sorted(v for v in present if v > max(listed, default=0))
    if uploading:
        return f"version(s) {uploading} in the folder but not yet in the manifest: a publish in progress"
    return None


def model_state(target: Target, model: Model, fetch: Fetch) -> str | None:
    """One look at ``model`` in the bucket: why it is not ready, or None."""
    status, body = fetch(target.key(f"{model.name}/{MANIFEST}"), None)
    if status not in (200, 404):
        return f"S3 answered {status} for the manifest: {body[:200]!r}"
    folder = target.key(f"{model.name}/")
    keys: set[str] = set()
    token = ""
    while True:
        query = {"list-type": "2", "prefix": folder, **({"continuation-token": token} if token else {})}
        listed_status, listing = fetch("", query)
        if listed_status != 200:
            return f"S3 answered {listed_status} to listing {folder}: {listing[:200]!r}"
        root = ElementTree.fromstring(listing)
        keys |= {(k.text or "").removeprefix(folder) for k in root.iter(f"{_S3_NS}Key")}
        token = root.findtext(f"{_S3_NS}NextContinuationToken") or ""
        if not token:
            break
    why = missing(model, body if status == 200 else None, keys)
    # The count makes each state of a publish in progress a line of its own in the log.
    return None if why is None else f"{why} ({len(keys)} object(s) in the model folder)"


def wait_for_models(
    target: Target,
    models: Sequence[Model],
    fetch: Fetch,
    *,
    log: Callable[[str], None],
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once every model is complete; log what is awaited, when it changes and every minute."""
    said: dict[str, tuple[str, float]] = {}
    waiting = list(models)
    while waiting:
        still = []
        for model in waiting:
            try:
                why = model_state(target, model, fetch)
            except (OSError, ValueError, ElementTree.ParseError) as error:
                why = f"{type(error).__name__}: {error}"
            if why is None:
                log(f"found {target.uri(model.name)}/ complete ({target.uri(f'{model.name}/{MANIFEST}')})")
                continue
            still.append(model)
            last = said.get(model.name)
            if last is None or last[0] != why or clock() - last[1] >= LOG_EVERY_S:
                log(f"waiting for {target.uri(f'{model.name}/{MANIFEST}')}: {why}")
                said[model.name] = (why, clock())
        waiting = still
        if waiting:
            sleep(poll_s)


def s3_fetch(target: Target, env: Mapping[str, str]) -> Fetch:
    """A Fetch that signs each request, renewing web-identity credentials before they expire."""
    held: list[Credentials] = []

    def fetch(key: str, query: Mapping[str, str] | None) -> tuple[int, bytes]:
        if not held or held[0].expires - time.time() < 300:
            held[:] = [web_identity_credentials(env, target.region)]
        url = target.url(key, query)
        now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - Triton 24.10 has Python 3.10
        return _http(url, signed_headers("GET", url, region=target.region, credentials=held[0], now=now))

    return fetch


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """``--model-repository=URI --model NAME[:V,...] ...``; the region from AWS_REGION."""
    uri, models = "", []
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith("--model-repository="):
            uri = item.split("=", 1)[1]
        elif item == "--model" and items:
            models.append(parse_model(items.pop(0)))
        else:
            print(f"inferstack model wait: unknown argument {item!r}", flush=True)
            return 2
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    target = parse_target(uri, region)
    names = ", ".join(m.name for m in models)
    print(f"inferstack: waiting for the models {names} in {target.uri()} before Triton starts", flush=True)
    wait_for_models(target, models, s3_fetch(target, env), log=lambda line: print(line, flush=True))
    print("inferstack: every model is complete; starting Triton", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
