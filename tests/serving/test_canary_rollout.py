"""A canary reaches every pod, on the real Triton 2.51: the served versions are in the pod template,
so a change starts new pods (surged in before the old ones go) that load them, and the split moves
only once every pod serves its versions. No request fails on the way.

The pods here are Triton processes started with the local runtime's own arguments (a new pod of an
unchanged template is the same command); "endpoints" are the pods a client may reach, as the Service's.
Version 1 is served, version 2 published later, the split switched to it, then rolled back.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from inferstack.components.canary import CanaryRelease
from inferstack.components.model_service import ModelSource, TritonModelServiceArgs, deployment
from inferstack.serving.local.demo import build_canary_demo_repository
from inferstack.serving.local.processes import ChildProcess, free_port, start_child
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.publish import S3Location, publish_repository
from inferstack.serving.models.repository import to_python_target

pytestmark = pytest.mark.real_server

REQUEST = json.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.25] * 16}]}
).encode()
CANARY = CanaryRelease("demo", stable_version=1, canary_version=2, weight_percent=50.0)


def status(url: str, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def serves(url: str, version: int) -> bool:
    return status(f"{url}/v2/models/demo/versions/{version}/ready") == 200


def pod_template(canary: CanaryRelease | None) -> str:
    args = TritonModelServiceArgs(
        models=["demo"],
        source=ModelSource(role_arn="arn:aws:iam::1:role/r", repository_uri="s3://b/p"),
        zones=3,
        canary=canary,
    )
    return json.dumps(deployment("demo", args, "s3://b/p")["spec"]["template"], sort_keys=True)


class Fleet:
    """The pods behind the Service, and a client sending a steady stream through the current split."""

    def __init__(self, runtime: LocalRuntime) -> None:
        first = next(c for c in runtime.children if c.name == "triton-0")
        self.runtime = runtime
        self.template = first
        self.endpoints = [runtime.http_url]
        self.pods: dict[str, ChildProcess] = {runtime.http_url: first}
        self.release: CanaryRelease | None = None
        self.answered: Counter[int] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._client = threading.Thread(target=self._send, daemon=True)
        self._client.start()

    def _send(self) -> None:
        sent = 0
        while not self._stop.is_set():
            release, endpoints = self.release, list(self.endpoints)
            canary = (
                release is not None and (sent * release.weight_percent) % 100 >= 100 - release.weight_percent
            )
            version = release.canary_version if release and canary else 1
            url = endpoints[sent % len(endpoints)]
            code = status(f"{url}/v2/models/demo/versions/{version}/infer", REQUEST)
            if code == 200:
                self.answered[version] += 1
            else:
                self.failed.append(f"HTTP {code} from {url} for version {version}")
            sent += 1
            time.sleep(0.02)

    def start_pod(self, work_dir: Path) -> str:
        """A new pod of the same template: the same command, its own ports and shm prefix."""
        index = len(self.pods)
        argv = list(self.template.argv)
        ports = {flag: free_port() for flag in ("--http-port", "--grpc-port", "--metrics-port")}
        argv = [
            f"{a.split('=')[0]}={ports[a.split('=')[0]]}" if a.split("=")[0] in ports else a for a in argv
        ]
        prefix = re.sub(r"triton-0_$", f"triton-{index}_", self.template.shm_prefix)
        argv = [a.replace(self.template.shm_prefix, prefix) for a in argv]
        # Each pod runs its own fill (the model-cache init container) before its Triton starts.
        folder, _, _ = self.runtime._fill(f"triton-{index}")
        argv = [f"--model-repository={folder}" if a.startswith("--model-repository=") else a for a in argv]
        pod = start_child(
            f"triton-{index}", argv, log=work_dir / f"triton-{index}.log", env=self.template.env
        )
        pod.shm_prefix = prefix
        url = f"http://127.0.0.1:{ports['--http-port']}"
        self.pods[url] = pod
        deadline = time.monotonic() + 120
        while status_or_none(f"{url}/v2/health/ready") != 200:
            assert pod.alive() and time.monotonic() < deadline, "\n".join(pod.tail())
            time.sleep(0.5)
        return url

    def roll(self, work_dir: Path) -> str:
        """maxSurge 1, maxUnavailable 0, one pod: the new pod is ready and in the endpoints before the
        old one leaves them (preStop drain), then the old one stops."""
        new = self.start_pod(work_dir)
        (old,) = self.endpoints
        self.endpoints = [old, new]
        time.sleep(1.0)
        self.endpoints = [new]
        time.sleep(0.5)  # the drain: what was sent to the old pod is answered
        self.pods[old].stop()
        return new

    def close(self) -> None:
        self._stop.set()
        self._client.join(timeout=60)
        for pod in self.pods.values():
            if pod.name != "triton-0":  # the runtime stops its own
                pod.stop()


def status_or_none(url: str) -> int | None:
    try:
        return status(url)
    except OSError:
        return None


def publish(runtime: LocalRuntime, repository: Path, staging: Path) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=runtime.s3_endpoint,
        aws_access_key_id="inferstack-local",
        aws_secret_access_key="inferstack-local",
        region_name="us-east-1",
    )
    served = to_python_target(repository, staging)
    # --prune: a version folder left above the manifest's would read as a publish in progress to the fill.
    publish_repository(served, S3Location(runtime.bucket, runtime.prefix), s3=s3, overwrite=True, prune=True)


@pytest.mark.usefixtures("triton_present")
def test_v1_served_v2_published_split_switched_v2_served_then_rolled_back(tmp_path: Path) -> None:
    before = build_canary_demo_repository(tmp_path / "v1", versions=(1,))
    with LocalRuntime(before, work_dir=tmp_path / "runtime") as runtime:
        fleet = Fleet(runtime)
        try:
            first = runtime.http_url
            assert serves(first, 1) and not serves(first, 2)

            # Version 2 is published with a policy that serves both; the running pod never sees it.
            publish(runtime, build_canary_demo_repository(tmp_path / "v1-v2"), tmp_path / "staged-1")
            time.sleep(2)
            assert not serves(first, 2)

            # The canary in the stack's config changes the pod template: the Deployment rolls.
            assert pod_template(CANARY) != pod_template(None)
            second = fleet.roll(tmp_path)
            assert serves(second, 1) and serves(second, 2)
            # Only now does Pulumi update the split (the ConfigMap waits for the rollout).
            fleet.release = CANARY
            time.sleep(3)
            assert fleet.answered[2] > 0

            # Roll back: the split first (weight 0: the template is unchanged, no pod moves) ...
            assert pod_template(CanaryRelease("demo", 1, 2, weight_percent=0.0)) == pod_template(CANARY)
            fleet.release = None
            answered_by_v2 = fleet.answered[2]
            # ... then the policy back to version 1 and the canary out of the config: a new rollout.
            publish(runtime, before, tmp_path / "staged-2")
            third = fleet.roll(tmp_path)
            assert serves(third, 1) and not serves(third, 2)
            time.sleep(1)
            assert fleet.answered[2] == answered_by_v2
        finally:
            fleet.close()
    assert fleet.failed == []
    assert fleet.answered[1] > 50 and fleet.answered[2] > 10
