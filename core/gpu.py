"""The GPU inventory: real GPUs through NVML, or simulated ones, read into immutable snapshots.

``--gpus`` / ``resources.gpus`` picks the GPUs (:func:`parse_gpu_spec`): ``auto`` (every GPU
NVML sees), a list such as ``0,2,3`` (only those NVML indices), or ``sim:N`` / ``sim:NxG``
(N simulated GPUs of G GiB) for machines without GPUs, tests, the demo and what-if planning.

:class:`GpuInventory` initialises NVML once, lazily, keeps the device handles, and reads each
device once per call into a frozen :class:`InventorySnapshot`. :meth:`GpuInventory.sample`
is the cheap per-second reading (no names, processes or topology) that feeds :class:`GpuRing`.
NVML is injectable: tests pass a fake of the pynvml functions called here.

Indices are NVML indices (PCI bus order). CUDA numbers devices fastest-first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set, so whoever sets ``CUDA_VISIBLE_DEVICES`` from these
indices must set that too (or use the UUIDs).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from loradeck.core.errors import GpuError

GIB = 1024**3
DEFAULT_SIM_MEMORY_GB = 24.0
MAX_SIM_GPUS = 64
MAX_SIM_MEMORY_GB = 4096.0
#: Topology level NVML reports for two GPUs whose only common ancestor is the system;
#: also used when NVML cannot tell, so unknown pairs are never preferred.
TOPOLOGY_SYSTEM = 50

_T = TypeVar("_T")
_SIM_RE = re.compile(r"sim:([0-9]{1,4})(?:x([0-9]{1,6}(?:\.[0-9]{1,3})?))?")
_SPEC_HELP = "expected auto, a list like 0,2,3, or sim:N / sim:NxG (e.g. sim:4x24)"
_SIM_HINT = "to simulate GPUs use --gpus sim:4 (or sim:4x24 for 24 GiB each)"


# --------------------------------------------------------------------------- snapshots


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
        """The readings of this snapshot that a :class:`GpuRing` keeps."""
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


# --------------------------------------------------------------------------- the --gpus value


@dataclass(frozen=True)
class GpuSpec:
    """A parsed ``--gpus`` value; ``str()`` gives it back in canonical form."""

    kind: Literal["auto", "list", "sim"]
    indices: tuple[int, ...] = ()
    """The NVML indices of a list spec."""
    sim_count: int = 0
    sim_memory_gb: float = DEFAULT_SIM_MEMORY_GB
    source: str = field(default="--gpus", compare=False)
    """Where the value came from, for error messages (``--gpus``, ``resources.gpus``)."""

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    def __str__(self) -> str:
        if self.kind == "list":
            return ",".join(str(i) for i in self.indices)
        if self.kind == "sim":
            return f"sim:{self.sim_count}x{self.sim_memory_gb:g}"
        return "auto"


def parse_gpu_spec(text: str, *, source: str = "--gpus") -> GpuSpec:
    """Parse ``auto``, ``0,2,3``, ``sim:N`` or ``sim:NxG``; anything else raises GpuError."""
    value = text.strip().lower()
    if value == "auto":
        return GpuSpec("auto", source=source)
    if value.startswith("sim"):
        match = _SIM_RE.fullmatch(value)
        if match is None:
            raise GpuError(f"{source} {text!r}: {_SPEC_HELP}")
        count = int(match[1])
        memory = float(match[2]) if match[2] else DEFAULT_SIM_MEMORY_GB
        if not 1 <= count <= MAX_SIM_GPUS:
            raise GpuError(f"{source} {text!r}: sim:N needs N from 1 to {MAX_SIM_GPUS}")
        if not 0 < memory <= MAX_SIM_MEMORY_GB:
            raise GpuError(
                f"{source} {text!r}: sim:NxG needs G (GiB per GPU) above 0 "
                f"and at most {MAX_SIM_MEMORY_GB:g}"
            )
        return GpuSpec("sim", sim_count=count, sim_memory_gb=memory, source=source)
    parts = [part.strip() for part in value.split(",")]
    # isascii() first: str.isdigit() also accepts digits such as '²' that int() refuses
    if not all(part.isascii() and part.isdigit() and len(part) <= 4 for part in parts):
        raise GpuError(f"{source} {text!r}: {_SPEC_HELP}")
    indices = tuple(int(part) for part in parts)
    for index in indices:
        if indices.count(index) > 1:
            raise GpuError(f"{source} {text!r}: GPU {index} is listed twice; list each once")
    return GpuSpec("list", indices=indices, source=source)


def sim_distances(indices: Sequence[int]) -> dict[tuple[int, int], int]:
    """A plausible two-socket PCIe box: pairs (0-1, 2-3, ...) share a switch, groups of four
    share a host bridge, the rest are across sockets."""
    out: dict[tuple[int, int], int] = {}
    for a in indices:
        for b in indices:
            if a != b:
                out[a, b] = 10 if a // 2 == b // 2 else 30 if a // 4 == b // 4 else TOPOLOGY_SYSTEM
    return out


# --------------------------------------------------------------------------- the inventory


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
    return f"no NVIDIA GPU found (NVML: {reason}); jobs with gpus = 0 still run; {_SIM_HINT}"


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
                f"{_SIM_HINT}"
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


# --------------------------------------------------------------------------- accounting


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


# --------------------------------------------------------------------------- rings

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


# --------------------------------------------------------------------------- `loradeck gpus`


def process_name(pid: int) -> str | None:
    """The name of process ``pid`` through psutil; None when it is gone or hidden."""
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None


def _foreign_processes(gpu: GpuSnapshot, loradeck_pids: Collection[int]) -> list[GpuProcess]:
    return [] if gpu.simulated else [p for p in gpu.processes if p.pid not in loradeck_pids]


def inventory_json(
    snap: InventorySnapshot,
    jobs_by_gpu: Mapping[int, Sequence[str]] | None = None,
    *,
    loradeck_pids: Collection[int] = (),
    name_of: Callable[[int], str | None] = process_name,
) -> dict[str, Any]:
    """The stable JSON of ``loradeck gpus --json``; GiB rounded to 3 decimals.

    ``jobs_by_gpu`` maps a GPU index to the loradeck jobs on it; ``loradeck_pids`` are the
    pids of their process trees (the rest are foreign).
    """
    jobs_by_gpu = jobs_by_gpu or {}
    gpus = []
    for gpu in snap.gpus:
        gpus.append(
            {
                "index": gpu.index,
                "uuid": gpu.uuid,
                "name": gpu.name,
                "simulated": gpu.simulated,
                "memory_total_gb": round(gpu.memory_total_gb, 3),
                "memory_used_gb": round(gpu.memory_used_gb, 3),
                "memory_free_gb": round(gpu.memory_free_gb, 3),
                "utilization": gpu.utilization,
                "temperature_c": gpu.temperature_c,
                "power_w": gpu.power_w,
                "power_limit_w": gpu.power_limit_w,
                "jobs": list(jobs_by_gpu.get(gpu.index, ())),
                "processes": [
                    {
                        "pid": p.pid,
                        "used_gb": round(p.used_gb, 3),
                        "loradeck": gpu.simulated or p.pid in loradeck_pids,
                        "name": None if gpu.simulated else name_of(p.pid),
                    }
                    for p in gpu.processes
                ],
                "foreign_gb": round(foreign_usage_gb(gpu, loradeck_pids), 3),
            }
        )
    return {
        "source": snap.source,
        "taken_at": snap.taken_at,
        "message": snap.message,
        "gpus": gpus,
        "distance": [
            {"a": a, "b": b, "level": level}
            for (a, b), level in sorted(snap.distance.items())
            if a < b
        ],
    }


#: Columns of numbers in the ``loradeck gpus`` table: GPU, MEMORY, UTIL, TEMP, POWER.
_RIGHT_ALIGNED = frozenset({0, 2, 3, 4, 5})


def _or_dash(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def format_inventory(
    snap: InventorySnapshot,
    jobs_by_gpu: Mapping[int, Sequence[str]] | None = None,
    *,
    loradeck_pids: Collection[int] = (),
    name_of: Callable[[int], str | None] = process_name,
) -> str:
    """The ``loradeck gpus`` table: one row per GPU with its loradeck jobs and foreign use."""
    jobs_by_gpu = jobs_by_gpu or {}
    if not snap.gpus:
        return snap.message or f"no GPUs ({snap.source})"
    kind = "simulated " if all(g.simulated for g in snap.gpus) else ""
    plural = "s" if len(snap.gpus) != 1 else ""
    lines = [f"{len(snap.gpus)} {kind}GPU{plural} ({snap.source})"]
    rows = [("GPU", "NAME", "MEMORY", "UTIL", "TEMP", "POWER", "LORADECK JOBS", "FOREIGN")]
    for gpu in snap.gpus:
        power = _or_dash(gpu.power_w, "{:.0f}")
        if gpu.power_w is not None and gpu.power_limit_w is not None:
            power += f"/{gpu.power_limit_w:.0f}"
        foreign = "-"
        if not gpu.simulated:
            procs = [
                f"{p.pid} {name_of(p.pid) or '?'} {p.used_gb:.1f}G"
                for p in _foreign_processes(gpu, loradeck_pids)
            ]
            foreign = f"{foreign_usage_gb(gpu, loradeck_pids):.1f} GiB"
            if procs:
                foreign += f" ({', '.join(procs)})"
        rows.append(
            (
                str(gpu.index),
                gpu.name,
                f"{gpu.memory_used_gb:.1f}/{gpu.memory_total_gb:.1f} GiB",
                _or_dash(gpu.utilization, "{:.0f}%"),
                _or_dash(gpu.temperature_c, "{:.0f}°C"),
                power if power == "-" else f"{power} W",
                ", ".join(jobs_by_gpu.get(gpu.index, ())) or "-",
                foreign,
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        cells = (
            cell.rjust(width) if col in _RIGHT_ALIGNED else cell.ljust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
    if snap.message:
        lines.append(snap.message)
    return "\n".join(lines)
