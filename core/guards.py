"""Guards on running jobs: each turns a bad sign into a warning or a stop.

* the watchdog: no progress for too long (``monitoring.stall_action``);
* divergence: a non-finite loss (``monitoring.on_nan``), reported on the monitor's thread;
* the VRAM guard: more VRAM than declared on a GPU shared with another job
  (``monitoring.vram_guard``);
* the RAM guard: no launches while system RAM is above ``resources.max_system_ram``;
* out of memory: the log check that tells an OOM from other failures, and the config
  copy edits (smaller batch, more accumulation...) that its retry is made with.

A part of :class:`~loradeck.core.engine.Engine`, which builds it and calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psutil

from loradeck.core import events as ev
from loradeck.core.configcopy import read_config_value, update_config_copy
from loradeck.core.errors import LoradeckError
from loradeck.core.executor import Executor
from loradeck.core.gpu import GpuInventory
from loradeck.core.jobmonitor import JobMonitor
from loradeck.core.models import Job
from loradeck.core.settings import Settings
from loradeck.core.stops import StopTracker

#: Seconds between VRAM guard checks (an NVML snapshot and a process-tree walk per job).
VRAM_CHECK_INTERVAL = 5.0
OOM_MARKERS = (b"CUDA out of memory", b"OutOfMemoryError", b"CUBLAS_STATUS_ALLOC_FAILED")


class Guards:
    """The watchdog, divergence and VRAM guards of one engine; they stop jobs through
    its :class:`~loradeck.core.stops.StopTracker`."""

    def __init__(
        self,
        settings: Settings,
        inventory: GpuInventory,
        executor: Executor,
        bus: ev.EventBus,
        *,
        stops: StopTracker,
        wake: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._inventory = inventory
        self._executor = executor
        self._bus = bus
        self._stops = stops
        self._wake = wake
        self._vram_checked_at = 0.0
        self._vram_warned: set[tuple[int, int]] = set()

    def diverged(self, job: Job, step: int | None) -> None:
        """The monitor saw a non-finite loss (called on the monitor's thread)."""
        where = f" at step {step}" if step is not None else ""
        if self._settings.monitoring.on_nan == "warn":
            self._bus.publish(
                ev.JobWarning(job_id=job.id, name=job.name, message=f"non-finite loss{where}")
            )
            return
        self._stops.begin(job, "diverged", step=step)
        self._wake()

    def watchdog(self, monitor: JobMonitor | None, now: float) -> None:
        """Stalled jobs: warn, restart (a retry by policy) or kill, per settings."""
        if monitor is None:
            return
        action = self._settings.monitoring.stall_action
        for job, idle in monitor.stalled(now):
            message = f"no progress for {idle / 60:.0f} min"
            if action == "warn":
                self._bus.publish(ev.JobWarning(job_id=job.id, name=job.name, message=message))
                monitor.forgive_stall(job.id, now)
            else:
                self._bus.publish(
                    ev.JobWarning(job_id=job.id, name=job.name, message=f"{message}; {action}")
                )
                self._stops.begin(job, "stalled", no_retry=action == "kill")

    def vram(self, running: list[Job], now: float) -> None:
        """A job using more VRAM than it declared (plus a margin) on a GPU it shares."""
        mode = self._settings.monitoring.vram_guard
        if mode == "off" or now - self._vram_checked_at < VRAM_CHECK_INTERVAL:
            return
        self._vram_checked_at = now
        declared = [j for j in running if j.spec.vram_gb is not None and j.gpu_ids]
        if not declared:
            return
        snapshot = self._inventory.snapshot()
        if all(g.simulated for g in snapshot.gpus):
            return
        sharing: dict[int, int] = {}
        for job in running:
            for gpu in job.gpu_ids:
                sharing[gpu] = sharing.get(gpu, 0) + 1
        margin = self._settings.monitoring.vram_guard_margin_gb
        by_index = {g.index: g for g in snapshot.gpus}
        for job in declared:
            pids = set(self._executor.pids(job))
            for gpu_index in job.gpu_ids:
                found = by_index.get(gpu_index)
                if found is None or sharing.get(gpu_index, 0) < 2:
                    continue
                used = sum(p.used_gb for p in found.processes if p.pid in pids)
                limit = (job.spec.vram_gb or 0.0) + margin
                if used <= limit:
                    continue
                message = (
                    f"uses {used:.1f} GiB on shared GPU {gpu_index}, "
                    f"declared {job.spec.vram_gb:g} (+{margin:g} margin)"
                )
                if mode == "kill":
                    self._bus.publish(
                        ev.JobWarning(job_id=job.id, name=job.name, message=message + "; killed")
                    )
                    self._stops.begin(job, "vram", no_retry=True)
                elif (job.id, job.attempts) not in self._vram_warned:
                    self._vram_warned.add((job.id, job.attempts))
                    self._bus.publish(ev.JobWarning(job_id=job.id, name=job.name, message=message))


def ram_guard(limit: float | None) -> str | None:
    """Why nothing may start now (system RAM above ``limit`` GiB), or None."""
    if limit is None:
        return None
    used_gb = psutil.virtual_memory().used / 2**30
    if used_gb > limit:
        return f"waiting: system RAM in use {used_gb:.1f} GiB is above the {limit:g} GiB limit"
    return None


def log_shows_oom(job: Job) -> bool:
    """Whether the end of ``job``'s log shows a CUDA out-of-memory error (a trainer
    that catches it exits with a plain non-zero status)."""
    try:
        with job.log_file.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read()
    except OSError:
        return False
    return any(marker in tail for marker in OOM_MARKERS)


def edit_config(job: Job, edits: Mapping[str, float], settings: Settings, bus: ev.EventBus) -> None:
    """Scale the retry's config copy by ``edits`` (``batch_size``, ``grad_accum``, ``lr``
    factors), under the key names of the job's trainer preset. A copy that cannot be
    edited is warned about, and the retry runs with it unchanged."""
    assert job.config_copy is not None
    preset = settings.trainer(job.spec.trainer) if job.spec.trainer else None
    keys = {
        "batch_size": preset.batch_size_key if preset else "train_batch_size",
        "grad_accum": preset.grad_accum_key if preset else "gradient_accumulation_steps",
        "lr": preset.lr_key if preset else "learning_rate",
    }
    values: dict[str, Any] = {}
    try:
        for what, factor in edits.items():
            key = keys[what]
            current = read_config_value(job.config_copy, key)
            if current is None and what == "grad_accum":
                current = 1
            if not isinstance(current, int | float) or isinstance(current, bool):
                continue
            if isinstance(current, int):
                values[key] = max(1, round(current * factor))
            else:
                values[key] = current * factor
        if values:
            update_config_copy(job.config_copy, values)
    except LoradeckError as err:
        bus.publish(
            ev.JobWarning(
                job_id=job.id, name=job.name, message=f"could not edit config copy: {err}"
            )
        )
