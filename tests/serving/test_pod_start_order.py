"""A generated Triton pod started for real against its model prefix in every state `pulumi up` can leave.

The pod is read from the offline plan of the prod stack (its Deployment, as the engine would send it):
the ``model-cache`` init container (the fill, run from its ConfigMap's script) and then Triton run with
their exact command, arguments and environment, as the kubelet would run them (init containers to completion, then the containers; ``$(VAR)``
expanded from the env). What differs is only what cannot be the cluster's here, each named below: the
moto endpoint (``AWS_ENDPOINT_URL_S3``) and moto's STS standing in for IRSA, the admin key's Secret,
loopback addresses and free ports, the wheel's Triton binary and backends, and the volumes (the
emptyDirs, the node cache's hostPath, the script's ConfigMap) as temporary folders. The bucket is filled with the plan's own BucketObjectv2 objects, one at a time in an
order their dependencies allow.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from inferstack.components.model_service.pod import TRITON_HTTP_PORT
from inferstack.infra.model_cache import MANIFEST
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.processes import (
    DUMMY_AWS,
    ChildProcess,
    find_triton,
    free_port,
    start_child,
    start_moto,
    triton_backends,
    triton_env,
)
from inferstack.stacks.offline import Recorded, Recording
from tests.conftest import ROOT
from tests.harness import run_stack

pytestmark = pytest.mark.real_server

_ASSET = "4dabf18193072939515e22adb298388d"
ADMIN_KEY = "k" * 32  # the Secret's value; the pod reads it into its env


@pytest.fixture(scope="module")
def plan() -> Recording:
    return run_stack(ROOT / "stacks", "prod")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    port = free_port()
    moto = start_moto(tmp_path, port)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=DUMMY_AWS["AWS_REGION"],
        )
        yield endpoint, client
    finally:
        moto.stop()


def model_objects(plan: Recording) -> list[Recorded]:
    """The plan's model objects of the ranker service, in an order their dependencies allow."""
    objects = {o.urn: o for o in plan.of_type("aws:s3/bucketObjectv2:BucketObjectv2")}
    ordered: list[Recorded] = []
    while len(ordered) < len(objects):
        ready = [
            o
            for o in objects.values()
            if o not in ordered and all(d in {r.urn for r in ordered} for d in o.dependencies if d in objects)
        ]
        assert ready, "the model objects' dependencies form a cycle"
        ordered.append(min(ready, key=lambda o: o.name))
    return ordered


def put(client: Any, recorded: Recorded) -> None:
    """What the AWS provider does for one BucketObjectv2."""
    inputs = recorded.inputs
    body = Path(inputs["source"]["path"]).read_bytes() if "source" in inputs else inputs["content"].encode()
    assert "source" not in inputs or inputs["source"][_ASSET]  # a file asset, in the engine's form
    client.put_object(
        Bucket=inputs["bucket"],
        Key=inputs["key"],
        Body=body,
        Metadata=inputs["metadata"],
        ChecksumAlgorithm="SHA256",
    )


def pod_spec(plan: Recording) -> dict[str, Any]:
    spec: dict[str, Any] = plan.one("kubernetes:apps/v1:Deployment", "ranker-deployment").inputs["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def container_env(container: dict[str, Any], volumes: dict[str, Path]) -> dict[str, str]:
    """The container's env as the kubelet gives it: Secret references resolved; paths under the
    container's volume mounts moved to the temporary folders standing in for those volumes."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            assert item["valueFrom"]["secretKeyRef"]["key"] == "admin-key"
            env[item["name"]] = ADMIN_KEY
        else:
            env[item["name"]] = item["value"]
    mounts = {
        m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in volumes
    }
    for name, value in env.items():
        for mount, local in mounts.items():
            if value == mount or value.startswith(f"{mount}/"):
                env[name] = str(local) + value.removeprefix(mount)
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def start_fill(
    plan: Recording, pod: dict[str, Any], endpoint: str, volumes: dict[str, Path], log: Path
) -> ChildProcess:
    (init,) = [c for c in pod["initContainers"] if c.get("restartPolicy") != "Always"]
    assert init["name"] == "model-cache"
    script = plan.one("kubernetes:core/v1:ConfigMap", "ranker-model-cache").inputs["data"]
    for name, text in script.items():
        (volumes["model-cache-script"] / name).write_text(text)
    # What EKS's pod identity webhook adds for the service account's role (IRSA), with the token
    # exchanged at moto's STS.
    account = plan.one("kubernetes:core/v1:ServiceAccount", "ranker-sa").inputs["metadata"]
    token = volumes["tmp"] / "irsa-token"
    token.write_text("eyJ.projected.token")
    irsa = {
        "AWS_ROLE_ARN": account["annotations"]["eks.amazonaws.com/role-arn"],
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_STS_REGIONAL_ENDPOINTS": "regional",
        "AWS_ENDPOINT_URL_STS": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    env = {**container_env(init, volumes), **irsa}
    command = [init["command"][0].replace("python3", sys.executable), *init["command"][1:]]
    argv = [local_path(expand(a, env), init, volumes) for a in [*command, *init["args"]]]
    return start_child("model-cache", argv, log=log, env=env)


def local_path(arg: str, container: dict[str, Any], volumes: dict[str, Path]) -> str:
    """A path under one of the container's mounts (alone or as a ``--flag=`` value) moved to the
    temporary folder standing in for that volume."""
    flag, equals, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
    for mount in container.get("volumeMounts", []):
        where = mount["mountPath"]
        if value == where or value.startswith(f"{where}/"):
            value = str(volumes[mount["name"]]) + value.removeprefix(where)
    return f"{flag}{equals}{value}"


def triton_argv(
    pod: dict[str, Any], endpoint: str, volumes: dict[str, Path], backends: Path
) -> tuple[list[str], dict[str, str], int]:
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    env = {**triton_env(find_triton()), **container_env(triton, volumes)}
    env.update(DUMMY_AWS)
    http, grpc, metrics, traces = free_port(), free_port(), free_port(), free_port()
    here = {
        f"--http-port={TRITON_HTTP_PORT}": f"--http-port={http}",
        "--grpc-port=8001": f"--grpc-port={grpc}",
        "--metrics-port=8002": f"--metrics-port={metrics}",
        "--metrics-address=0.0.0.0": "--metrics-address=127.0.0.1",  # tests bind to loopback only
    }
    args = []
    for arg in triton["args"]:
        arg = local_path(expand(arg, env), triton, volumes)
        arg = here.get(arg, arg)
        # The collector's cluster DNS name cannot resolve here: a closed port on loopback instead.
        args.append(re.sub(r"url=http://[^/]+/", f"url=http://127.0.0.1:{traces}/", arg))
    assert triton["command"] == ["tritonserver"]
    argv = [
        str(find_triton().server),
        *args,
        "--grpc-address=127.0.0.1",  # the image's default is every address
        f"--backend-directory={backends}",  # the image's backends are in its default folder
    ]
    return argv, env, http


def wait_for_line(child: ChildProcess, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in child.tail(400) if re.search(pattern, line)]
        if found:
            return found[-1]
        assert child.alive(), child.describe_exit()
        time.sleep(0.2)
    raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n" + "\n".join(child.tail()))


def test_the_pod_waits_through_every_state_of_the_upload_and_serves_once_complete(
    plan: Recording, s3: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = s3
    objects = model_objects(plan)
    bucket = objects[0].inputs["bucket"]
    client.create_bucket(Bucket=bucket)  # the ModelStore's bucket, which every object depends on
    pod = pod_spec(plan)
    names = ("tmp", "model-repository", "node-model-cache", "model-cache-script")
    volumes = {name: tmp_path / name for name in names}
    for folder in volumes.values():
        folder.mkdir()
    backends = triton_backends(find_triton(), tmp_path)

    # Without the fill, the real Triton with the pod's arguments exits on the empty repository.
    argv, env, http = triton_argv(pod, endpoint, volumes, backends)
    bare = start_child("triton-without-fill", argv, log=tmp_path / "bare.log", env=env)
    try:
        bare.process.wait(timeout=60)
        assert bare.process.returncode != 0
    finally:
        bare.stop()

    fill = start_fill(plan, pod, endpoint, volumes, tmp_path / "fill.log")
    try:
        # Empty, then each object in turn: the fill stays up and says what it waits for in each state.
        key = objects[-1].inputs["key"]
        folder = key.removesuffix(MANIFEST)
        for count, recorded in enumerate(objects):
            line = wait_for_line(fill, rf"waiting for s3://{bucket}/{key}: .*\({count} object", 40)
            assert fill.alive(), fill.describe_exit()
            assert "no manifest yet" in line, line
            put(client, recorded)
        fill.process.wait(timeout=60)
        assert fill.process.returncode == 0, fill.describe_exit()
        assert any(f"found s3://{bucket}/{folder} complete" in line for line in fill.tail()), fill.tail()
        assert any("every model is complete" in line for line in fill.tail()), fill.tail()
    finally:
        fill.stop()

    # Then the kubelet starts Triton: it loads and serves what the deploy shipped.
    triton = start_child("triton", argv, log=tmp_path / "triton.log", env=env)
    try:
        client_http = TritonClient(f"http://127.0.0.1:{http}", timeout_s=5.0)
        deadline = time.monotonic() + 120
        while not (client_http.is_ready() and client_http.is_ready("ranker")):
            assert triton.alive(), triton.describe_exit()
            assert time.monotonic() < deadline, triton.tail()
            time.sleep(0.5)
        features = np.arange(8, dtype=np.float32).reshape(2, 4)
        answer = client_http.infer("ranker", {"INPUT__0": features})
        np.testing.assert_array_equal(answer["OUTPUT__0"], features)
        client_http.close()
        # Triton's folder holds what the deploy shipped (and the python backend's bytecode of model.py),
        # within what the pod asked the node for; the node cache holds each file once, by its sha256.
        repository = volumes["model-repository"]
        files = {p: p.stat().st_size for p in repository.rglob("*") if p.is_file()}
        served = {p.relative_to(repository).as_posix() for p in files if "__pycache__" not in p.parts}
        shipped = {
            o.inputs["key"].split("/", 1)[1] for o in objects if not o.inputs["key"].endswith(MANIFEST)
        }
        assert served == shipped, (served, shipped)
        limit = next(v for v in pod["volumes"] if v["name"] == "model-repository")["emptyDir"]["sizeLimit"]
        assert sum(files.values()) <= float(limit.removesuffix("Gi")) * (1 << 30)
        blobs = {p.name for p in (volumes["node-model-cache"] / "blobs").rglob("*") if p.is_file()}
        assert blobs == {
            o.inputs["metadata"]["sha256"] for o in objects if not o.inputs["key"].endswith(MANIFEST)
        }
    finally:
        triton.stop()
