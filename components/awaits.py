"""How long what Pulumi waits for takes: one budget for nodes, images, model loads and rollouts.

pulumi-kubernetes waits after a create or update until the object is ready (``provider/pkg/await``):
a Deployment until its replicas are updated and available, a ClusterIP Service with a selector until
its Endpoints target a ready pod, a LoadBalancer Service also until it has an ingress address, a
Helm release (``helm.sh/v3:Release``) until helm's own wait ends, bounded by the release's
``timeout``. Without ``customTimeouts`` each gives up after 10 minutes (``DefaultServiceTimeoutMins``,
``DefaultDeploymentTimeoutMins``); helm after 300 s. ``pulumi.com/skipAwait`` skips the wait and
``pulumi.com/waitFor`` replaces it with one condition. Every timeout here is derived from the same
budget, and ``policies/awaits.py`` holds every awaited resource of a stack against it.
Pure: the policy pack imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SKIP_AWAIT = "pulumi.com/skipAwait"
WAIT_FOR = "pulumi.com/waitFor"
# pulumi-kubernetes' waits without customTimeouts, and helm's without a release timeout.
DEFAULT_AWAIT_S = 600
HELM_DEFAULT_TIMEOUT_S = 300

# A GPU instance launched by its Auto Scaling group, booted from the EKS NVIDIA AMI, joined and Ready
# with its node agents (CNI, device plugin) running: the scale-up a pending pod waits for.
NODE_START_S = 300
# The ~10 GB Triton image onto a fresh node's gp3 volume at ~17 MB/s.
TRITON_IMAGE_PULL_S = 600
# Any other image we run (node agents, the request front, charts' controllers): a few hundred MB.
SMALL_IMAGE_PULL_S = 120
LARGE_IMAGES = {"nvcr.io/nvidia/tritonserver": TRITON_IMAGE_PULL_S}
# An NLB provisioned by the cloud provider and its hostname written to the Service's status.
LOAD_BALANCER_S = 300
# An EBS volume created and attached for a PVC (WaitForFirstConsumer binds once the pod schedules).
VOLUME_S = 120
# A chart's pods pull their images (a few small ones each) and start; hooks run before and after.
CHART_PODS_S = 300
# What the engine needs around a wait: watch set-up, Endpoints settling (10 s in service.go), API latency.
MARGIN_S = 60


def image_pull_s(image: str) -> int:
    repository = image.split("@", 1)[0].rsplit(":", 1)[0] if "/" in image else image
    return LARGE_IMAGES.get(repository, SMALL_IMAGE_PULL_S)


def pod_start_s(*, image_pull: int, startup: int, node_start: int = NODE_START_S) -> int:
    """A pod of a group at zero becoming ready: a node, its image, then its own start-up (model load)."""
    return node_start + image_pull + startup


def create_timeout_s(pod_start: int) -> int:
    """A new Deployment's pods start side by side, each on its own node: one pod start."""
    return pod_start + MARGIN_S


def rollout_timeout_s(pod_start: int, *, max_replicas: int, max_surge: int = 1, grace_s: int = 0) -> int:
    """An update surges ``max_surge`` pods at a time and retires an old one (its grace period) after
    each is ready: at ``max_replicas``, ceil(max_replicas / max_surge) pod starts one after another."""
    steps = math.ceil(max_replicas / max_surge)
    return steps * (pod_start + grace_s) + MARGIN_S


def claims_volumes(values: object) -> bool:
    """Whether chart values ask for persistent volumes (a ``volumeClaimTemplate`` anywhere)."""
    if isinstance(values, dict):
        return "volumeClaimTemplate" in values or any(claims_volumes(v) for v in values.values())
    if isinstance(values, list):
        return any(claims_volumes(v) for v in values)
    return False


def release_timeout_s(*, volumes: bool) -> int:
    """A Helm release's wait: its pods on the nodes there are, and the DaemonSet pod of a node that
    joins meanwhile (a node start), its images, and its volumes bound where it claims any."""
    return NODE_START_S + CHART_PODS_S + (VOLUME_S if volumes else 0) + MARGIN_S


def duration(seconds: int) -> str:
    """Seconds as the ``customTimeouts`` string the SDK sends."""
    return f"{seconds}s"


def _probe_s(probe: Mapping[str, Any] | None) -> int:
    if not probe:
        return 0
    return int(probe.get("initialDelaySeconds", 0)) + int(probe.get("failureThreshold", 3)) * int(
        probe.get("periodSeconds", 10)
    )


def step_wait_s(container: Mapping[str, Any]) -> int:
    """How long an init container that runs to completion may wait: its ``--wait-s=N`` (the model-cache
    fill's wait for the manifests, infra/model_cache.py), 0 for one that says nothing of it."""
    if container.get("restartPolicy") == "Always":  # a sidecar: started, not waited for
        return 0
    given = [str(a).split("=", 1)[1] for a in container.get("args") or [] if str(a).startswith("--wait-s=")]
    return sum(math.ceil(float(v)) for v in given)


def manifest_pod_start_s(spec: Mapping[str, Any]) -> int:
    """A pod on a node scaled up for it: the node, its largest image (the EKS kubelet pulls side by
    side), the waits of its init steps (one after another), then the longest start-up its startup
    probe allows (else one readiness period)."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    pull = max((image_pull_s(str(c.get("image", ""))) for c in containers), default=0)
    startup = (
        max(
            (_probe_s(c.get("startupProbe")) or int((c.get("readinessProbe") or {}).get("periodSeconds", 0)))
            for c in containers
        )
        if containers
        else 0
    )
    steps = sum(step_wait_s(c) for c in spec.get("initContainers") or [])
    return NODE_START_S + pull + steps + startup


def _surge(spec: Mapping[str, Any], replicas: int) -> int:
    rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
    surge = rolling.get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return max(1, math.ceil(replicas * float(surge[:-1]) / 100))
    return max(1, int(surge))


def workload_waits_s(spec: Mapping[str, Any], max_replicas: int, *, stateful: bool = False) -> dict[str, int]:
    """Seconds a Deployment's or StatefulSet's create and update take at most, read from its spec:
    a create starts its pods side by side; an update replaces them ``maxSurge`` at a time (a
    StatefulSet one at a time), each batch a pod start and the old pods' grace period."""
    pod = (spec.get("template") or {}).get("spec") or {}
    start = manifest_pod_start_s(pod) + (VOLUME_S if spec.get("volumeClaimTemplates") else 0)
    batch = 1 if stateful else _surge(spec, max_replicas)
    grace = int(pod.get("terminationGracePeriodSeconds", 30))
    return {"create": start, "update": math.ceil(max_replicas / batch) * (start + grace)}


def workload_timeouts(
    spec: Mapping[str, Any], max_replicas: int, *, stateful: bool = False
) -> dict[str, str]:
    """``customTimeouts`` (create, update) that cover ``workload_waits_s``."""
    return {
        op: duration(s + MARGIN_S)
        for op, s in workload_waits_s(spec, max_replicas, stateful=stateful).items()
    }
