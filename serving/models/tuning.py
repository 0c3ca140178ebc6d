"""The serving settings a model gets when its builder names none, chosen for the machine it is built on.

Measured with `inferstack bench` on a 2-core machine (compute-bound MLP, 16 clients, python backend):
one instance with one torch thread left a core without model work, since the other core's Triton
threads are idle most of the time at these request sizes; the in-process ceiling, using both cores,
was then about twice as fast. Two torch threads in one instance spin between operators and fight
Triton's threads (a third of the throughput). One instance per core, each with one thread, keeps
both cores computing: a forward pass runs on one while the other instance's batch is handed over.
"""

from __future__ import annotations

import os

from inferstack.serving.models.specs import InstanceKind, Target

MAX_CPU_INSTANCES = 4  # beyond it a batch of max_batch_size needs more clients than a service usually has


def default_instance_count(kind: InstanceKind, target: Target, cores: int | None = None) -> int:
    """CPU instances of the python backend: one per core of this machine, up to ``MAX_CPU_INSTANCES``.

    The python model then gives each instance's torch ``max(1, cores // (2 x instances))`` threads.
    GPU instances, and libtorch (whose intra-op threads default to every core), keep Triton's one.
    """
    if kind != "KIND_CPU" or target != "python":
        return 1
    available = (os.cpu_count() or 1) if cores is None else cores
    return max(1, min(available, MAX_CPU_INSTANCES))
