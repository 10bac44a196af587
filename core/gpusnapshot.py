"""What one reading of the GPUs holds: frozen snapshots, the per-second samples, and the
memory that processes loradeck did not start hold (:func:`foreign_usage_gb`).

These are plain values, shared by the NVML reader (:mod:`loradeck.core.gpu`), the
scheduler, the sample rings (:mod:`loradeck.core.gpuring`) and ``loradeck gpus``
(:mod:`loradeck.core.gpuformat`). Memory is in GiB (1024**3 bytes).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from loradeck.core.errors import GpuError

GIB = 1024**3


@dataclass(frozen=True)
class GpuProcess:
    """A compute process NVML lists on a GPU."""

    pid: int
    used_gb: float
    """GiB the process holds; 0.0 where NVML cannot say (its memory then shows up in the
    used-minus-listed remainder, see :func:`foreign_usage_gb`)."""


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU as read at one moment. Memory in GiB (1024**3 bytes)."""

    index: int
    uuid: str
    name: str
    memory_total_gb: float
    memory_used_gb: float
    utilization: float | None
    """Percent of time a kernel ran over the last sample period; None when not supported."""
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...]
    simulated: bool

    @property
    def memory_free_gb(self) -> float:
        return max(self.memory_total_gb - self.memory_used_gb, 0.0)

    def sample(self, taken_at: float) -> GpuSample:
        """The readings of this snapshot that a :class:`~loradeck.core.gpuring.GpuRing` keeps."""
        return GpuSample(
            index=self.index,
            taken_at=taken_at,
            utilization=self.utilization,
            memory_used_gb=self.memory_used_gb,
            temperature_c=self.temperature_c,
            power_w=self.power_w,
        )


@dataclass(frozen=True)
class GpuSample:
    """The fast-changing readings of one GPU, for the per-second rings."""

    index: int
    taken_at: float
    utilization: float | None
    memory_used_gb: float
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class InventorySnapshot:
    """Every GPU loradeck may use, read at one moment."""

    gpus: tuple[GpuSnapshot, ...]
    distance: Mapping[tuple[int, int], int] = field(hash=False)
    """NVML topology level of each pair of GPUs, in both orders: 0 same board, 10 one PCIe
    switch, 20 several switches, 30 host bridge, 40 same NUMA node, 50 across sockets."""
    taken_at: float
    source: str
    """``nvml`` or the simulated spec, e.g. ``sim:4x24``."""
    message: str | None = None
    """A note for the user, e.g. that ``auto`` found no NVIDIA GPU."""

    def gpu(self, index: int) -> GpuSnapshot:
        """The GPU with NVML (or simulated) index ``index``."""
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise GpuError(f"GPU {index} is not in the inventory ({self.source})")

    def samples(self) -> tuple[GpuSample, ...]:
        return tuple(gpu.sample(self.taken_at) for gpu in self.gpus)


def foreign_usage_gb(gpu: GpuSnapshot, loradeck_pids: Collection[int]) -> float:
    """GiB of ``gpu`` held by processes loradeck did not start; the scheduler counts it taken.

    That is the memory of every listed process whose pid is not in ``loradeck_pids`` (the
    process trees of loradeck's jobs), plus, when none of the listed processes is
    loradeck's, the memory used that no listed process accounts for (graphics processes,
    processes in other containers, the driver's reserve). With a loradeck job on the GPU
    that remainder is left out, since it is most likely the job's own context and the job
    is already counted by what it declared. Simulated GPUs have no foreign processes.
    """
    if gpu.simulated:
        return 0.0
    listed = sum(p.used_gb for p in gpu.processes)
    foreign = sum(p.used_gb for p in gpu.processes if p.pid not in loradeck_pids)
    if not any(p.pid in loradeck_pids for p in gpu.processes):
        foreign += max(gpu.memory_used_gb - listed, 0.0)
    return foreign
