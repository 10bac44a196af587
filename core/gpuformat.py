"""``loradeck gpus``: an inventory snapshot as stable JSON (``--json``) or as a text table.

Both name each GPU's loradeck jobs and its foreign use (:func:`foreign_usage_gb`); process
names come from psutil, imported only when a name is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from loradeck.core.gpusnapshot import GpuProcess, GpuSnapshot, InventorySnapshot, foreign_usage_gb

#: Columns of numbers in the ``loradeck gpus`` table: GPU, MEMORY, UTIL, TEMP, POWER.
_RIGHT_ALIGNED = frozenset({0, 2, 3, 4, 5})


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
