"""The GPU inventory: real GPUs through NVML, or simulated ones, read into immutable snapshots.

:class:`GpuInventory` initialises NVML once, lazily, keeps the device handles, and reads each
device once per call into a frozen :class:`InventorySnapshot`. :meth:`GpuInventory.sample`
is the cheap per-second reading (no names, processes or topology) that feeds :class:`GpuRing`.
NVML is injectable: tests pass a fake of the pynvml functions called here.

Indices are NVML indices (PCI bus order). CUDA numbers devices fastest-first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set, so whoever sets ``CUDA_VISIBLE_DEVICES`` from these
indices must set that too (or use the UUIDs).

The rest of the GPU layer lives beside it and is re-exported here, so ``loradeck.core.gpu``
stays the one import for callers: the ``--gpus`` value (:mod:`loradeck.core.gpuspec`),
snapshots and foreign-usage accounting (:mod:`loradeck.core.gpusnapshot`), sample rings
(:mod:`loradeck.core.gpuring`) and the ``loradeck gpus`` output (:mod:`loradeck.core.gpuformat`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from loradeck.core.errors import GpuError
from loradeck.core.gpuformat import format_inventory, inventory_json, process_name
from loradeck.core.gpuring import RING_METRICS, GpuRing, RingMetric
from loradeck.core.gpusnapshot import (
    GIB,
    GpuProcess,
    GpuSample,
    GpuSnapshot,
    InventorySnapshot,
    foreign_usage_gb,
)
from loradeck.core.gpuspec import (
    DEFAULT_SIM_MEMORY_GB,
    MAX_SIM_GPUS,
    MAX_SIM_MEMORY_GB,
    SIM_HINT,
    TOPOLOGY_SYSTEM,
    GpuSpec,
    parse_gpu_spec,
    sim_distances,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Device:
    index: int
    handle: Any
    name: str
    uuid: str


@dataclass(frozen=True)
class _Opened:
    devices: tuple[_Device, ...]
    distance: Mapping[tuple[int, int], int]
    message: str | None


def _text(value: str | bytes) -> str:
    # nvidia-ml-py returns str; older releases returned bytes
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _no_gpu_message(reason: str) -> str:
    return f"no NVIDIA GPU found (NVML: {reason}); jobs with gpus = 0 still run; {SIM_HINT}"


class GpuInventory:
    """The GPUs of one ``--gpus`` spec, read on demand into :class:`InventorySnapshot`.

    ``nvml`` is the pynvml module or a fake of it; by default pynvml is imported at the first
    reading, so building an inventory never touches NVML. Safe to call from several threads.
    """

    def __init__(
        self,
        spec: GpuSpec | str,
        *,
        nvml: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = parse_gpu_spec(spec) if isinstance(spec, str) else spec
        self._nvml: Any = nvml
        self._clock = clock
        self._lock = threading.Lock()
        self._opened: _Opened | None = None
        self._initialised = False
        self._unavailable: tuple[type[BaseException], ...] = ()

    # ------------------------------------------------------------------ public

    def snapshot(
        self, sim_usage: Mapping[int, Sequence[tuple[int, float]]] | None = None
    ) -> InventorySnapshot:
        """Read every GPU once: memory, utilisation, temperature, power, processes.

        ``sim_usage`` maps a simulated GPU's index to the ``(pid, declared_gb)`` of the
        loradeck jobs on it; they are reported as its processes and memory used. It is
        ignored for real GPUs. Raises GpuError when NVML fails in a way that is not
        "this reading is not supported" (a lost GPU, a driver mismatch).
        """
        if self.spec.simulated:
            return self._sim_snapshot(sim_usage or {})
        opened = self._open()
        gpus = tuple(self._read_device(dev, full=True) for dev in opened.devices)
        return InventorySnapshot(
            gpus=gpus,
            distance=opened.distance,
            taken_at=self._clock(),
            source="nvml",
            message=opened.message,
        )

    def sample(
        self, sim_usage: Mapping[int, Sequence[tuple[int, float]]] | None = None
    ) -> tuple[GpuSample, ...]:
        """The per-second reading: utilisation, memory, temperature and power only."""
        if self.spec.simulated:
            return self._sim_snapshot(sim_usage or {}).samples()
        opened = self._open()
        taken_at = self._clock()
        return tuple(self._read_device(dev, full=False).sample(taken_at) for dev in opened.devices)

    def close(self) -> None:
        """Shut NVML down (once); a later reading initialises it again."""
        with self._lock:
            self._shutdown()
            self._opened = None

    def __enter__(self) -> GpuInventory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ simulated

    def _sim_snapshot(
        self, sim_usage: Mapping[int, Sequence[tuple[int, float]]]
    ) -> InventorySnapshot:
        spec = self.spec
        unknown = sorted(set(sim_usage) - set(range(spec.sim_count)))
        if unknown:
            raise GpuError(
                f"simulated GPU {unknown[0]} does not exist ({spec} has 0-{spec.sim_count - 1})"
            )
        gpus = []
        for index in range(spec.sim_count):
            procs = tuple(GpuProcess(pid, float(gb)) for pid, gb in sim_usage.get(index, ()))
            gpus.append(
                GpuSnapshot(
                    index=index,
                    uuid=f"SIM-{index}",
                    name=f"Simulated GPU ({spec.sim_memory_gb:g} GiB)",
                    memory_total_gb=spec.sim_memory_gb,
                    memory_used_gb=sum(p.used_gb for p in procs),
                    utilization=None,
                    temperature_c=None,
                    power_w=None,
                    power_limit_w=None,
                    processes=procs,
                    simulated=True,
                )
            )
        return InventorySnapshot(
            gpus=tuple(gpus),
            distance=MappingProxyType(sim_distances(range(spec.sim_count))),
            taken_at=self._clock(),
            source=str(spec),
        )

    # ------------------------------------------------------------------ NVML

    def _open(self) -> _Opened:
        with self._lock:
            if self._opened is None:
                self._opened = self._open_nvml()
            return self._opened

    def _open_nvml(self) -> _Opened:
        spec = self.spec
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as err:
                return self._no_gpu(f"nvidia-ml-py is not installed ({err})", err)
            self._nvml = pynvml
        nvml = self._nvml
        self._unavailable = (
            nvml.NVMLError_NotSupported,
            nvml.NVMLError_FunctionNotFound,
            nvml.NVMLError_NoPermission,
        )
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as err:
            return self._no_gpu(str(err), err)
        except nvml.NVMLError as err:
            raise GpuError(f"NVML failed to start: {err}; check the NVIDIA driver") from err
        self._initialised = True
        try:
            count = int(self._call(-1, "GPU count", nvml.nvmlDeviceGetCount))
            if count == 0:
                self._shutdown()
                return self._no_gpu("no devices", None)
            wanted = spec.indices if spec.kind == "list" else tuple(range(count))
            for index in wanted:
                if index >= count:
                    raise GpuError(
                        f"{spec.source} {str(spec)!r}: GPU {index} does not exist; NVML found "
                        f"{count} GPU{'s' if count != 1 else ''} (0-{count - 1})"
                    )
            devices = tuple(self._device(index) for index in wanted)
            return _Opened(devices, MappingProxyType(self._topology(devices)), None)
        except BaseException:
            self._shutdown()
            raise

    def _shutdown(self) -> None:
        if self._initialised:
            # nothing is left to release when shutdown fails; it must not hide the cause
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        self._initialised = False

    def _no_gpu(self, reason: str, err: BaseException | None) -> _Opened:
        if self.spec.kind == "list":
            raise GpuError(
                f"{self.spec.source} {str(self.spec)!r}: no NVIDIA GPU found (NVML: {reason}); "
                f"{SIM_HINT}"
            ) from err
        return _Opened((), MappingProxyType({}), _no_gpu_message(reason))

    def _device(self, index: int) -> _Device:
        nvml = self._nvml
        handle = self._call(index, "open", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        name = self._call(index, "name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
        uuid = self._call(index, "UUID", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        return _Device(index, handle, name, uuid)

    def _topology(self, devices: Sequence[_Device]) -> dict[tuple[int, int], int]:
        nvml = self._nvml
        out: dict[tuple[int, int], int] = {}
        for i, a in enumerate(devices):
            for b in devices[i + 1 :]:
                read = functools.partial(
                    nvml.nvmlDeviceGetTopologyCommonAncestor, a.handle, b.handle
                )
                level = self._optional(a.index, f"topology to GPU {b.index}", read)
                out[a.index, b.index] = out[b.index, a.index] = (
                    TOPOLOGY_SYSTEM if level is None else int(level)
                )
        return out

    def _read_device(self, dev: _Device, *, full: bool) -> GpuSnapshot:
        nvml, handle, index = self._nvml, dev.handle, dev.index
        memory = self._call(index, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        util = self._optional(
            index, "utilisation", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        )
        temperature = self._optional(
            index,
            "temperature",
            lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        )
        power = self._optional(
            index, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        )
        limit = processes = None
        if full:
            limit = self._optional(
                index, "power limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
            )
            processes = self._optional(index, "processes", lambda: self._processes(handle))
        return GpuSnapshot(
            index=index,
            uuid=dev.uuid,
            name=dev.name,
            memory_total_gb=memory.total / GIB,
            memory_used_gb=memory.used / GIB,
            utilization=util,
            temperature_c=temperature,
            power_w=power,
            power_limit_w=limit,
            processes=processes or (),
            simulated=False,
        )

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nvml = self._nvml
        try:
            listed = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLLibraryMismatchError:
            # a driver older than this nvidia-ml-py lacks the _v3 call the plain name maps to
            listed = nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle)
        return tuple(
            GpuProcess(int(p.pid), 0.0 if p.usedGpuMemory is None else p.usedGpuMemory / GIB)
            for p in listed
        )

    def _call(self, index: int, what: str, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except self._nvml.NVMLError as err:
            whose = (
                f"GPU {index}: NVML could not read its" if index >= 0 else "NVML could not read the"
            )
            raise GpuError(f"{whose} {what}: {err}") from err

    def _optional(self, index: int, what: str, read: Callable[[], _T]) -> _T | None:
        """A reading some GPUs lack (consumer cards, VMs, containers): None, not a crash."""
        try:
            return read()
        except self._unavailable:
            return None
        except self._nvml.NVMLError as err:
            raise GpuError(f"GPU {index}: NVML could not read its {what}: {err}") from err


__all__ = [
    "DEFAULT_SIM_MEMORY_GB",
    "GIB",
    "MAX_SIM_GPUS",
    "MAX_SIM_MEMORY_GB",
    "RING_METRICS",
    "TOPOLOGY_SYSTEM",
    "GpuInventory",
    "GpuProcess",
    "GpuRing",
    "GpuSample",
    "GpuSnapshot",
    "GpuSpec",
    "InventorySnapshot",
    "RingMetric",
    "foreign_usage_gb",
    "format_inventory",
    "inventory_json",
    "parse_gpu_spec",
    "process_name",
    "sim_distances",
]
