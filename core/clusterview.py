"""The scheduler's view of the machine's GPUs, and the submit-time fit check."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from loradeck.core.gpu import GpuSpec, InventorySnapshot, foreign_usage_gb
from loradeck.core.models import Job, JobSpec
from loradeck.core.scheduler import ClusterView, GpuView, never_fits
from loradeck.core.settings import Settings


def cluster_from_snapshot(
    snapshot: InventorySnapshot, settings: Settings, *, loradeck_pids: set[int] | None = None
) -> ClusterView:
    """The scheduler's view of a GPU snapshot. With ``loradeck_pids`` given, memory held
    by other processes counts as taken (foreign VRAM); without, none is assumed."""
    return ClusterView(
        gpus=tuple(
            GpuView(
                index=g.index,
                total_gb=g.memory_total_gb,
                foreign_gb=(
                    foreign_usage_gb(g, loradeck_pids)
                    if loradeck_pids is not None and not g.simulated
                    else 0.0
                ),
                name=g.name,
            )
            for g in snapshot.gpus
        ),
        distance=dict(snapshot.distance),
        max_vram_per_gpu=settings.resources.max_vram_per_gpu,
    )


def fit_check_for(cluster: ClusterView) -> Callable[[JobSpec], str | None]:
    """Submit-time check: why a job can never run on ``cluster``, or None."""

    def check(spec: JobSpec) -> str | None:
        return never_fits(spec, cluster)

    return check


def sim_usage(spec: GpuSpec, running: Iterable[Job]) -> dict[int, list[tuple[int, float]]]:
    """What simulated GPUs report as used: each running job's declared ``vram_gb`` (the
    whole GPU for a job that declared none), keyed by GPU; GPUs the spec does not have
    are left out. Empty for real GPUs, which report their own memory."""
    if not spec.simulated:
        return {}
    usage: dict[int, list[tuple[int, float]]] = {}
    for job in running:
        for gpu in job.gpu_ids:
            if 0 <= gpu < spec.sim_count:
                gb = job.spec.vram_gb if job.spec.vram_gb is not None else spec.sim_memory_gb
                usage.setdefault(gpu, []).append((job.id, gb))
    return usage


def local_job_pids(jobs: Iterable[Job]) -> set[int]:
    """The live processes of these jobs' current attempts on this machine (tmux
    executor), found from their folders as the executor finds them. Used to tell a job's
    GPU memory from foreign use without a running engine (``loradeck gpus``)."""
    from loradeck.core.executor.jobfiles import attempt_pids

    return {pid for job in jobs for pid in attempt_pids(job)}
