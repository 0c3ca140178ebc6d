"""The node-local model cache against a real moto S3 server on loopback: what it fetches, what it reuses,
what it refuses, how it shares and prunes, and that it runs from a ConfigMap under the Triton image's
python3 (standard library, Python 3.10)."""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
import torch
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from inferstack.components.model_service.args import ModelSource, TritonModelServiceArgs
from inferstack.components.model_service.pod import (
    CACHE_SCRIPT,
    MODEL_REPOSITORY_DIR,
    NODE_CACHE_MOUNT,
    TRITON_UID,
    fill_container,
    model_cache_config_map,
)
from inferstack.infra import model_cache as cache_module
from inferstack.infra.model_cache import (
    MANIFEST,
    CacheError,
    Credentials,
    Manifest,
    ModelCache,
    S3Reader,
    main,
    not_ready,
    parse_manifest,
    sigv4_headers,
)
from inferstack.serving.models.build import build_model
from inferstack.serving.models.publish import S3Location, publish_repository
from inferstack.serving.models.repository import demo_model
from inferstack.serving.models.specs import LatestVersions, ModelOptions

BUCKET = "models"
PREFIX = "prod/models"


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


def reader(moto_endpoint: str) -> S3Reader:
    return S3Reader(BUCKET, "us-east-1", Credentials("x", "x"), moto_endpoint)


def publish_versions(tmp_path: Path, s3: Any, versions: tuple[int, ...], *, latest: int = 1) -> Path:
    repo = tmp_path / "repo"
    module, example = demo_model()
    for version in versions:
        torch.manual_seed(version)
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter)
        options = ModelOptions(max_batch_size=8, version_policy=LatestVersions(latest))
        build_model(module, example, name="demo", repository=repo, version=version, options=options)
    publish_repository(repo, S3Location(BUCKET, PREFIX), s3=s3)
    return repo


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_sigv4_signature_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib signer against botocore's own S3 signer, same request, same instant."""
    when = time.gmtime(1_764_000_000)
    instant = datetime.datetime.fromtimestamp(1_764_000_000, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: instant)
    for token in (None, "session-token"):
        ours = sigv4_headers(
            Credentials("AKIDEXAMPLE", "secret", token),
            "eu-west-1",
            "GET",
            "bucket.s3.eu-west-1.amazonaws.com",
            "/prod/models/demo/1/model%2B.pt",
            "",
            when,
        )
        request = AWSRequest(
            method="GET", url="https://bucket.s3.eu-west-1.amazonaws.com/prod/models/demo/1/model%2B.pt"
        )
        S3SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret", token), "s3", "eu-west-1").add_auth(request)
        assert ours["authorization"] == request.headers["Authorization"]


def test_cold_fill_fetches_only_served_versions_then_warm_fill_downloads_nothing(
    tmp_path: Path, s3: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = publish_versions(tmp_path, s3, (1, 2))
    cache = ModelCache(tmp_path / "cache", 2**30)
    served = tmp_path / "served"
    cold = cache.fill(reader(moto_endpoint), PREFIX, ["demo"], served)
    want = {k: v for k, v in digests(repo / "demo").items() if not k.startswith("1/")}
    assert digests(served / "demo") == want  # version 1 is not served by latest:1
    assert sorted(cold.downloaded) == sorted(set(want.values()))
    assert cold.bytes_downloaded == sum((repo / "demo" / r).stat().st_size for r in want)
    hashed: list[Path] = []
    monkeypatch.setattr(cache_module, "sha256_of", lambda path: hashed.append(path) or "")
    warm = cache.fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served-again")
    assert hashed == []  # nothing wrote to the blobs since they were verified: nothing is read again
    assert warm.downloaded == [] and warm.bytes_downloaded == 0
    assert sorted(warm.reused) == sorted(set(want.values()))
    assert digests(tmp_path / "served-again" / "demo") == want


def test_latest_two_serves_both_versions(tmp_path: Path, s3: Any, moto_endpoint: str) -> None:
    repo = publish_versions(tmp_path, s3, (1, 2, 3), latest=2)
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/demo/inferstack-manifest.json")["Body"].read()
    )
    assert manifest["served"] == [2, 3]
    ModelCache(tmp_path / "cache", 2**30).fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served")
    assert sorted(p.name for p in (tmp_path / "served" / "demo").iterdir() if p.is_dir()) == ["2", "3"]
    assert digests(tmp_path / "served" / "demo") == {
        k: v for k, v in digests(repo / "demo").items() if not k.startswith("1/")
    }


def test_corrupted_cached_file_is_detected_and_fetched_again(
    tmp_path: Path, s3: Any, moto_endpoint: str
) -> None:
    repo = publish_versions(tmp_path, s3, (1,))
    cache = ModelCache(tmp_path / "cache", 2**30)
    cache.fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "a")
    model_digest = digests(repo / "demo")["1/model.pt"]
    blob = cache.blob(model_digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    report = cache.fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "b")
    assert report.refetched == [model_digest] and report.downloaded == [model_digest]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == model_digest
    assert digests(tmp_path / "b" / "demo") == digests(repo / "demo")


@pytest.mark.parametrize("part_bytes", [4, 16 << 20], ids=["in-parts", "whole"])
def test_object_that_does_not_match_its_manifest_is_refused(
    tmp_path: Path, s3: Any, moto_endpoint: str, part_bytes: int
) -> None:
    publish_versions(tmp_path, s3, (1,))
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/demo/1/model.pt", Body=b"not the published bytes")
    with pytest.raises(CacheError, match=r"model.pt: sha256 never matched the manifest"):
        ModelCache(tmp_path / "cache", 2**30, part_bytes=part_bytes).fill(
            reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served"
        )
    assert not (tmp_path / "served" / "demo").exists()
    assert list((tmp_path / "cache" / "staging").iterdir()) == []  # no temporary file left behind


def test_big_files_come_in_parallel_ranges(tmp_path: Path, s3: Any, moto_endpoint: str) -> None:
    repo = publish_versions(tmp_path, s3, (1,))
    size = (repo / "demo" / "1" / "model.pt").stat().st_size
    calls: list[tuple[int, int]] = []
    s3_reader = reader(moto_endpoint)
    original = s3_reader.get_into

    def counting(key: str, handle: int, start: int, end: int, progress: Any = None) -> None:
        calls.append((start, end))
        original(key, handle, start, end, progress)

    s3_reader.get_into = counting  # type: ignore[method-assign]
    ModelCache(tmp_path / "cache", 2**30, part_bytes=1024).fill(
        s3_reader, PREFIX, ["demo"], tmp_path / "served"
    )
    model_ranges = sorted(c for c in calls if c[1] - c[0] == 1023 or c[1] == size - 1)
    assert len(model_ranges) >= size // 1024
    assert digests(tmp_path / "served" / "demo") == digests(repo / "demo")


def test_two_fills_at_once_fetch_each_file_once(tmp_path: Path, s3: Any, moto_endpoint: str) -> None:
    publish_versions(tmp_path, s3, (1,))
    cache_dir = tmp_path / "cache"
    reports = []

    def fill(name: str) -> None:
        reports.append(
            ModelCache(cache_dir, 2**30).fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / name)
        )

    threads = [threading.Thread(target=fill, args=(f"pod-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    downloaded = [d for r in reports for d in r.downloaded]
    assert len(reports) == 3 and len(downloaded) == len(set(downloaded)) == 3  # model.pt, model.py, config
    assert all(
        digests(tmp_path / f"pod-{i}" / "demo") == digests(tmp_path / "pod-0" / "demo") for i in range(3)
    )


def test_cache_is_pruned_least_recently_used_first(tmp_path: Path, s3: Any, moto_endpoint: str) -> None:
    cache = ModelCache(tmp_path / "cache", 10**9)
    stale = []
    for index in range(3):
        blob = cache.blob(hashlib.sha256(str(index).encode()).hexdigest())
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(b"x" * 1000)
        stamp = time.time() - 3600 * (3 - index)
        os.utime(blob, (stamp, stamp))
        stale.append(blob.name)
    publish_versions(tmp_path, s3, (1,))
    cache.max_bytes = (
        sum(p.stat().st_size for p in (tmp_path / "repo" / "demo").rglob("*") if p.is_file()) + 1500
    )
    report = cache.fill(reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served")
    assert report.pruned == stale[:2]  # the oldest two go, the newest fits beside the model's files
    assert [p.name for p in (tmp_path / "cache" / "blobs").glob("*/*") if p.name in stale] == [stale[2]]


def test_models_bigger_than_the_cache_are_refused_before_downloading(
    tmp_path: Path, s3: Any, moto_endpoint: str
) -> None:
    publish_versions(tmp_path, s3, (1,))
    with pytest.raises(CacheError, match=r"more than the cache's .* raise the node cache size"):
        ModelCache(tmp_path / "cache", 1000).fill(
            reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served"
        )
    assert not (tmp_path / "cache" / "blobs").exists()


def test_fill_waits_for_the_manifest_a_publish_writes_last(
    tmp_path: Path, s3: Any, moto_endpoint: str
) -> None:
    publisher = threading.Timer(1.0, publish_versions, args=(tmp_path, s3, (1,)))
    publisher.start()
    try:
        report = ModelCache(tmp_path / "cache", 2**30).fill(
            reader(moto_endpoint), PREFIX, ["demo"], tmp_path / "served", wait_s=60
        )
    finally:
        publisher.join()
    assert len(report.downloaded) == 3


def irsa_env(tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What EKS sets in a pod whose service account names a role; STS here is moto's."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ranker-models-reader")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_the_script_fills_with_irsa_credentials(
    tmp_path: Path, s3: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = publish_versions(tmp_path, s3, (1,))
    irsa_env(tmp_path, moto_endpoint, monkeypatch)
    argv = ["--source", f"s3://{BUCKET}/{PREFIX}", "--models", "demo", "--cache", str(tmp_path / "c")]
    assert (
        main([*argv, "--repository", str(tmp_path / "r"), "--max-gib", "1", "--endpoint", moto_endpoint]) == 0
    )
    assert digests(tmp_path / "r" / "demo") == digests(repo / "demo")


def test_missing_manifest_fails_with_one_line(
    tmp_path: Path,
    s3: Any,
    moto_endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    irsa_env(tmp_path, moto_endpoint, monkeypatch)
    argv = ["--source", f"s3://{BUCKET}/{PREFIX}", "--models", "demo", "--cache", str(tmp_path / "c")]
    argv += [
        "--repository",
        str(tmp_path / "r"),
        "--max-gib",
        "1",
        "--endpoint",
        moto_endpoint,
        "--wait-s",
        "1",
    ]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"model cache: s3://{BUCKET}/{PREFIX}/demo/: no manifest yet (0 object(s)")
    assert "after 1 s" in error and "\n" not in error


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not an inferstack manifest"),
        (b'{"model": "m", "sha256": {"a": "zz"}}', "64-hex-digit"),
        (json.dumps({"model": "m", "sha256": {"../x": "a" * 64}}).encode(), "outside the model folder"),
        (json.dumps({"model": "m", "sha256": {}, "served": [0]}).encode(), "version numbers >= 1"),
    ],
)
def test_malformed_manifests_are_named(body: bytes, message: str) -> None:
    with pytest.raises(CacheError, match=message):
        parse_manifest(body, where="s3://b/m/inferstack-manifest.json")


def test_manifest_without_served_versions_serves_every_version() -> None:
    manifest = parse_manifest(
        json.dumps(
            {"model": "m", "sha256": {"1/a": "a" * 64, "2/a": "b" * 64, "config.pbtxt": "c" * 64}}
        ).encode(),
        where="old",
    )
    assert sorted(manifest.wanted()) == ["1/a", "2/a", "config.pbtxt"]


def test_runs_under_the_triton_images_python_from_a_config_map() -> None:
    """Python 3.10 syntax (Ubuntu 22.04's python3 in tritonserver 24.10) and the standard library only."""
    source = Path(cache_module.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 10))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


@pytest.fixture
def pod_dirs() -> Iterator[Path]:
    """Folders uid 1000 (Triton's user, the fill's) can reach, as the pod's volumes would be."""
    root = Path(tempfile.mkdtemp(prefix="inferstack-pod-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_rendered_fill(
    pod_dirs: Path, moto_endpoint: str, node_cache: Path
) -> subprocess.CompletedProcess[str]:
    """The pod's model-cache init container as rendered: its ConfigMap's script, its arguments with the
    volumes' paths mapped to folders here, run by the system python3 as Triton's uid."""
    service = TritonModelServiceArgs(
        models=["demo"],
        source=ModelSource(
            role_arn="arn:aws:iam::123456789012:role/r", repository_uri=f"s3://{BUCKET}/{PREFIX}"
        ),
        zones=3,
        region="us-east-1",
    )
    container = fill_container("ranker", service, f"s3://{BUCKET}/{PREFIX}")
    script = pod_dirs / "script" / CACHE_SCRIPT
    script.parent.mkdir(exist_ok=True)
    script.write_text(model_cache_config_map("ranker", service)["data"][CACHE_SCRIPT])
    repository = pod_dirs / "models"
    repository.mkdir(exist_ok=True)
    os.chown(repository, TRITON_UID, TRITON_UID)  # fsGroup makes the emptyDir the pod's
    token = pod_dirs / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
    token.chmod(0o644)
    mapped = {NODE_CACHE_MOUNT: str(node_cache), MODEL_REPOSITORY_DIR: str(repository)}
    argv = [a.replace(f"={k}", f"={v}") for a in container["args"] for k, v in mapped.items() if f"={k}" in a]
    argv += [a for a in container["args"] if not any(f"={k}" in a for k in mapped)]
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token)}
    env |= {
        "AWS_ENDPOINT_URL_STS": moto_endpoint,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "PATH": "/usr/bin:/bin",
    }
    assert container["command"][0] == "python3"
    return subprocess.run(
        ["/usr/bin/python3", str(script), *argv],
        env=env,
        user=TRITON_UID,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the fill as Triton's uid 1000, which needs root here")
@pytest.mark.parametrize("bootstrapped", [True, False], ids=["node-cache", "node-without-bootstrap"])
def test_the_rendered_init_container_fills_the_pods_repository(
    tmp_path: Path, s3: Any, moto_endpoint: str, pod_dirs: Path, bootstrapped: bool
) -> None:
    """On a node the bootstrap prepared, the cache is shared: the next pod downloads nothing. Elsewhere
    the kubelet made the folder root's: the pod still serves, from a cache of its own, and says so."""
    repo = publish_versions(tmp_path, s3, (1,))
    node_cache = pod_dirs / "node-cache"
    node_cache.mkdir(mode=0o755)  # what hostPath DirectoryOrCreate leaves: root's
    if bootstrapped:
        os.chown(node_cache, TRITON_UID, TRITON_UID)  # what the node's bootstrap does
    done = run_rendered_fill(pod_dirs, moto_endpoint, node_cache)
    assert done.returncode == 0, done.stderr
    assert digests(pod_dirs / "models" / "demo") == digests(repo / "demo")
    if not bootstrapped:
        assert "is not writable by uid 1000" in done.stderr and "not shared with other pods" in done.stderr
        assert list(node_cache.iterdir()) == []
        return
    assert len(list(node_cache.glob("blobs/*/*"))) == 3
    again = run_rendered_fill(pod_dirs, moto_endpoint, node_cache)  # the next pod on the node
    assert again.returncode == 0 and "0 downloaded" in again.stdout and "3 reused" in again.stdout


_A, _B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("manifest", "keys", "versions", "why"),
    [
        (None, set(), (), "no manifest yet"),
        (
            Manifest("m", {"1/model.pt": _A, "config.pbtxt": _B}, (1,)),
            {"1/model.pt", "config.pbtxt", MANIFEST},
            (2,),
            "the manifest serves versions [1], the pod serves [2]",
        ),
        (
            Manifest("m", {"1/model.pt": _A, "config.pbtxt": _B}, (1,)),
            {"config.pbtxt", MANIFEST},
            (1,),
            "1 file(s) of the manifest not in the bucket: ['1/model.pt']",
        ),
        (
            Manifest("m", {"1/model.pt": _A, "config.pbtxt": _B}, (1,)),
            {"1/model.pt", "2/model.pt", "config.pbtxt", MANIFEST},
            (),
            "version(s) [2] in the folder but not yet in the manifest: a publish in progress",
        ),
        (
            Manifest("m", {"1/model.pt": _A, "config.pbtxt": _B}, (1,)),
            {"1/model.pt", "config.pbtxt"},
            (1,),
            None,
        ),
        # An unserved older version need not be in the bucket (``--served-only`` publishes leave it out).
        (
            Manifest("m", {"1/a.pt": _A, "2/a.pt": _A, "config.pbtxt": _B}, (2,)),
            {"2/a.pt", "config.pbtxt"},
            (2,),
            None,
        ),
    ],
)
def test_a_model_is_complete_only_when_its_manifest_and_files_are(
    manifest: Manifest | None, keys: set[str], versions: tuple[int, ...], why: str | None
) -> None:
    assert not_ready(manifest, keys, versions) == why


def test_the_fill_logs_each_state_and_retries_s3_errors(
    tmp_path: Path, s3: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait says what it waits for once per state, keeps going through an S3 error (a bucket
    that does not exist yet), and returns the manifest once the model is complete."""
    lines: list[str] = []
    cache = ModelCache(tmp_path / "cache", 2**30, progress=lines.append)
    missing = S3Reader("no-such-bucket", "us-east-1", Credentials("k", "s"), moto_endpoint)
    with pytest.raises(CacheError, match=r"no-such-bucket.*after 0 s"):
        cache.await_manifests(missing, PREFIX, ["demo"], wait_s=0.0, versions={})
    assert len(lines) == 1 and "HTTP 404" in lines[0], lines
    lines.clear()
    calls = iter(range(100))

    def publish_after_two_looks(seconds: float) -> None:
        if next(calls) == 1:
            publish_versions(tmp_path, s3, (1,))

    monkeypatch.setattr("inferstack.infra.model_cache.time.sleep", publish_after_two_looks)
    (manifest,) = cache.await_manifests(reader(moto_endpoint), PREFIX, ["demo"], wait_s=60.0, versions={})
    assert manifest.model == "demo"
    waiting = [line for line in lines if line.startswith("waiting for")]
    assert len(waiting) == 1 and "no manifest yet (0 object(s)" in waiting[0], lines  # logged once
    assert lines[-1] == f"found s3://{BUCKET}/{PREFIX}/demo/ complete"
