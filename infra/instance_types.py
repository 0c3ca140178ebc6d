"""The EC2 instance types inferstack knows, with the facts that placement and validation need.

Pure data: the policy pack imports it, so it must never import pulumi_aws or register anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput


@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type. ``gpus == 0`` for CPU types."""

    name: str
    family: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str = ""
    gpu_memory_gib: float = 0.0  # per GPU

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def _gpu(name: str, vcpus: int, memory_gib: float, gpus: int, model: str, gpu_mem: float) -> InstanceType:
    return InstanceType(name, name.split(".")[0], vcpus, memory_gib, gpus, model, gpu_mem)


def _cpu(name: str, vcpus: int, memory_gib: float) -> InstanceType:
    return InstanceType(name, name.split(".")[0], vcpus, memory_gib)


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        # NVIDIA T4, 16 GiB
        _gpu("g4dn.xlarge", 4, 16, 1, "T4", 16),
        _gpu("g4dn.2xlarge", 8, 32, 1, "T4", 16),
        _gpu("g4dn.4xlarge", 16, 64, 1, "T4", 16),
        _gpu("g4dn.8xlarge", 32, 128, 1, "T4", 16),
        _gpu("g4dn.12xlarge", 48, 192, 4, "T4", 16),
        # NVIDIA A10G, 24 GiB
        _gpu("g5.xlarge", 4, 16, 1, "A10G", 24),
        _gpu("g5.2xlarge", 8, 32, 1, "A10G", 24),
        _gpu("g5.4xlarge", 16, 64, 1, "A10G", 24),
        _gpu("g5.8xlarge", 32, 128, 1, "A10G", 24),
        _gpu("g5.12xlarge", 48, 192, 4, "A10G", 24),
        _gpu("g5.48xlarge", 192, 768, 8, "A10G", 24),
        # NVIDIA L4, 24 GiB
        _gpu("g6.xlarge", 4, 16, 1, "L4", 24),
        _gpu("g6.2xlarge", 8, 32, 1, "L4", 24),
        _gpu("g6.4xlarge", 16, 64, 1, "L4", 24),
        _gpu("g6.8xlarge", 32, 128, 1, "L4", 24),
        _gpu("g6.12xlarge", 48, 192, 4, "L4", 24),
        _gpu("g6.48xlarge", 192, 768, 8, "L4", 24),
        # NVIDIA L40S, 48 GiB
        _gpu("g6e.xlarge", 4, 32, 1, "L40S", 48),
        _gpu("g6e.2xlarge", 8, 64, 1, "L40S", 48),
        _gpu("g6e.12xlarge", 48, 384, 4, "L40S", 48),
        # NVIDIA A100 / H100
        _gpu("p4d.24xlarge", 96, 1152, 8, "A100", 40),
        _gpu("p4de.24xlarge", 96, 1152, 8, "A100", 80),
        _gpu("p5.48xlarge", 192, 2048, 8, "H100", 80),
        # CPU, for the system node group
        _cpu("m6i.large", 2, 8),
        _cpu("m6i.xlarge", 4, 16),
        _cpu("m6i.2xlarge", 8, 32),
        _cpu("m7i.large", 2, 8),
        _cpu("m7i.xlarge", 4, 16),
        _cpu("m7i.2xlarge", 8, 32),
        _cpu("c6i.xlarge", 4, 8),
        _cpu("r6i.xlarge", 4, 32),
    )
}


def lookup(name: str, *, field: str) -> InstanceType:
    """The instance type called ``name``; an error naming ``field`` and the known types otherwise."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(INSTANCE_TYPES))
        raise InvalidInput(field, name, f"one of the known instance types: {known}") from None
