"""The await budget: what a pod start, a rollout and a release take, read from manifests."""

from __future__ import annotations

from inferstack.components.awaits import (
    MARGIN_S,
    NODE_START_S,
    SMALL_IMAGE_PULL_S,
    TRITON_IMAGE_PULL_S,
    VOLUME_S,
    claims_volumes,
    image_pull_s,
    manifest_pod_start_s,
    release_timeout_s,
    rollout_timeout_s,
    workload_timeouts,
    workload_waits_s,
)


def test_the_triton_image_is_the_large_one_whatever_its_tag_or_digest() -> None:
    assert image_pull_s("nvcr.io/nvidia/tritonserver:24.10-py3") == TRITON_IMAGE_PULL_S
    assert image_pull_s("nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64) == TRITON_IMAGE_PULL_S
    assert image_pull_s("docker.io/library/nginx:1.27") == SMALL_IMAGE_PULL_S


def test_a_pod_start_is_a_node_the_largest_image_and_the_longest_startup() -> None:
    spec = {
        "initContainers": [
            {"image": "nginx:1", "restartPolicy": "Always", "readinessProbe": {"periodSeconds": 5}}
        ],
        "containers": [
            {
                "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                "startupProbe": {"periodSeconds": 10, "failureThreshold": 60, "initialDelaySeconds": 5},
            }
        ],
    }
    assert manifest_pod_start_s(spec) == NODE_START_S + TRITON_IMAGE_PULL_S + 605


def test_an_init_step_that_waits_adds_its_wait_before_the_startup() -> None:
    """The model-cache fill runs to completion before Triton starts, waiting up to its --wait-s for
    the manifests: that is part of the pod's start. A sidecar's args are not a wait."""
    fill = {"image": "nvcr.io/nvidia/tritonserver:24.10-py3", "args": ["--models=m", "--wait-s=600"]}
    sidecar = {"image": "nginx:1", "restartPolicy": "Always", "args": ["--wait-s=999"]}
    spec = {"initContainers": [fill, sidecar], "containers": [{"image": "a:1"}]}
    assert manifest_pod_start_s(spec) == NODE_START_S + TRITON_IMAGE_PULL_S + 600


def test_a_rollout_is_one_pod_start_per_surge_batch() -> None:
    assert rollout_timeout_s(1000, max_replicas=12) == 12 * 1000 + MARGIN_S
    assert rollout_timeout_s(1000, max_replicas=12, max_surge=3, grace_s=100) == 4 * 1100 + MARGIN_S
    spec = {
        "replicas": 4,
        "strategy": {"rollingUpdate": {"maxSurge": "50%"}},
        "template": {"spec": {"containers": [{"image": "a:1"}], "terminationGracePeriodSeconds": 10}},
    }
    start = NODE_START_S + SMALL_IMAGE_PULL_S
    assert workload_waits_s(spec, 4) == {"create": start, "update": 2 * (start + 10)}
    # A StatefulSet replaces one pod at a time, each after its claim is bound.
    stateful = {**spec, "volumeClaimTemplates": [{}]}
    assert workload_waits_s(stateful, 4, stateful=True)["update"] == 4 * (start + VOLUME_S + 10)
    assert workload_timeouts(spec, 4) == {
        "create": f"{start + MARGIN_S}s",
        "update": f"{2 * (start + 10) + MARGIN_S}s",
    }


def test_a_release_claiming_volumes_waits_for_them_too() -> None:
    values = {"prometheus": {"prometheusSpec": {"storageSpec": {"volumeClaimTemplate": {"spec": {}}}}}}
    assert claims_volumes(values) and not claims_volumes({"image": {"tag": "v1"}})
    assert release_timeout_s(volumes=True) - release_timeout_s(volumes=False) == VOLUME_S
