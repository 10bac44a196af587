"""Ring buffers of per-second GPU samples: the recent history the GPU plots draw.

One :class:`GpuRing` per GPU keeps the last ``capacity`` :class:`GpuSample` readings, one
fixed-size buffer per metric, so a plot reads one series without walking sample objects.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from loradeck.core.gpusnapshot import GpuSample

RingMetric = Literal["taken_at", "utilization", "memory_used_gb", "temperature_c", "power_w"]
RING_METRICS: tuple[RingMetric, ...] = (
    "taken_at",
    "utilization",
    "memory_used_gb",
    "temperature_c",
    "power_w",
)


class GpuRing:
    """The last ``capacity`` samples of one GPU, one fixed-size buffer per metric."""

    def __init__(self, index: int, capacity: int = 600) -> None:
        if capacity < 1:
            raise ValueError(f"GpuRing capacity must be at least 1, got {capacity}")
        self.index = index
        self.capacity = capacity
        self._buffers: dict[RingMetric, deque[float | None]] = {
            metric: deque(maxlen=capacity) for metric in RING_METRICS
        }

    def append(self, sample: GpuSample) -> None:
        """Add one sample; the oldest falls out once the ring is full."""
        if sample.index != self.index:
            raise ValueError(
                f"sample of GPU {sample.index} appended to the ring of GPU {self.index}"
            )
        for metric in RING_METRICS:
            self._buffers[metric].append(getattr(sample, metric))

    def series(self, metric: RingMetric) -> list[float | None]:
        """Oldest first; None where the GPU could not give the reading."""
        if metric not in self._buffers:
            raise ValueError(f"unknown GPU metric {metric!r}; one of {', '.join(RING_METRICS)}")
        return list(self._buffers[metric])

    def __len__(self) -> int:
        return len(self._buffers["taken_at"])
