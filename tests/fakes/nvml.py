"""A fake of the pynvml functions loradeck calls, with configurable GPUs.

It raises the real pynvml exception classes (built from error codes exactly as pynvml
does), so ``except nvml.NVMLError_NotSupported`` in loradeck is tested against the real
class hierarchy. It counts calls, so tests can check that NVML is initialised once and
that handles are reused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3

# pynvml creates these classes at import time from its NVML_ERROR_* constants
NVMLError = pynvml.NVMLError
NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
NVMLError_NotSupported = pynvml.NVMLError_NotSupported
NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
NVMLError_NoPermission = pynvml.NVMLError_NoPermission
NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError

NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
LIB_RM_VERSION_MISMATCH = pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH
NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION


@dataclass
class FakeDevice:
    """One fake GPU. ``errors`` maps a pynvml function name to the NVML error code it fails
    with on this device (e.g. ``{"nvmlDeviceGetTemperature": NOT_SUPPORTED}``)."""

    name: str | bytes = "NVIDIA GeForce RTX 4090"
    uuid: str | bytes = "GPU-00000000-0000-0000-0000-000000000000"
    total_bytes: int = 24 * GIB
    used_bytes: int = 0
    utilization: int = 0
    temperature: int = 40
    power_mw: int = 30_000
    power_limit_mw: int = 450_000
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    """(pid, usedGpuMemory in bytes or None)."""
    errors: dict[str, int] = field(default_factory=dict)
    old_driver: bool = False
    """The plain process call fails the way pynvml does on a driver without the _v3 call."""


@dataclass(frozen=True)
class FakeHandle:
    index: int


class FakeNvml:
    """Stands in for the ``pynvml`` module: pass it as ``GpuInventory(..., nvml=FakeNvml(...))``.

    ``init_error`` and ``count_error`` are NVML error codes nvmlInit and nvmlDeviceGetCount
    fail with; ``topology`` maps a pair of
    indices (either order) to the nvmlDeviceGetTopologyCommonAncestor level.
    """

    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLLibraryMismatchError = NVMLLibraryMismatchError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(
        self,
        devices: list[FakeDevice] | None = None,
        *,
        init_error: int | None = None,
        topology: dict[tuple[int, int], int] | None = None,
        count_error: int | None = None,
    ) -> None:
        self.devices = devices if devices is not None else []
        self.init_error = init_error
        self.count_error = count_error
        self.topology = topology or {}
        self.calls: Counter[str] = Counter()
        self.initialised = 0

    # ------------------------------------------------------------------ helpers

    def _enter(self, fn: str, handle: FakeHandle | None = None) -> FakeDevice | None:
        self.calls[fn] += 1
        if self.initialised <= 0:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        assert isinstance(handle, FakeHandle), f"{fn} got {handle!r}, not a handle"
        device = self.devices[handle.index]
        if fn in device.errors:
            raise NVMLError(device.errors[fn])
        return device

    def _device(self, fn: str, handle: FakeHandle) -> FakeDevice:
        device = self._enter(fn, handle)
        assert device is not None
        return device

    # ------------------------------------------------------------------ pynvml API

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.devices):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return FakeHandle(index)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str | bytes:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str | bytes:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> Any:
        device = self._device("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(
            total=device.total_bytes,
            used=device.used_bytes,
            free=device.total_bytes - device.used_bytes,
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> Any:
        device = self._device("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=device.utilization, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def _process_list(self, device: FakeDevice) -> list[Any]:
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)
            for pid, used in device.processes
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        device = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        if device.old_driver:
            raise NVMLLibraryMismatchError("Unversioned function called ... use _v2")
        return self._process_list(device)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeHandle) -> list[Any]:
        return self._process_list(self._device("nvmlDeviceGetComputeRunningProcesses_v2", handle))

    def nvmlDeviceGetTopologyCommonAncestor(self, a: FakeHandle, b: FakeHandle) -> int:
        self._device("nvmlDeviceGetTopologyCommonAncestor", a)
        pair = (a.index, b.index)
        level = self.topology.get(pair, self.topology.get((b.index, a.index)))
        if level is None:
            raise NVMLError(NOT_SUPPORTED)
        return level
