"""The fixed scene's data: a sweep with jobs in every state, four busy GPUs (or, for
Slurm mode, three nodes of a cluster), events and checkpoints, all at a fixed clock.

Deterministic: the same pictures every run (see :mod:`loradeck.tui.scene`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path

from loradeck.core import events as ev
from loradeck.core.facade import (
    ForeignProcess,
    GpuPanel,
    MachineReading,
    MetricPoint,
    NodePanel,
)
from loradeck.core.gpu import GpuProcess, GpuSnapshot
from loradeck.core.models import FailureClass, Job, JobSpec, JobState, Progress

#: The scene's clock: 2025-06-15 14:40:00 UTC.
NOW = 1_750_000_000.0
ROOT = Path("/srv/loradeck/home")


def _job(job_id: int, name: str, **fields: object) -> Job:
    spec_fields = {k: v for k, v in fields.items() if k in JobSpec.model_fields}
    job_fields = {k: v for k, v in fields.items() if k not in JobSpec.model_fields}
    spec = JobSpec(
        name=name,
        command=f"accelerate launch train_network.py --config_file jobs/{job_id}/config.toml",
        user=str(spec_fields.pop("user", "mira")),
        **spec_fields,
    )
    folder = ROOT / "jobs" / str(job_id)
    return Job(
        id=job_id,
        spec=spec,
        command=spec.command or "",
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=NOW - 7200 + job_id * 60,
        **job_fields,
    )


def _progress(step: int, total: int, loss: float, lr: float, eta: float) -> Progress:
    return Progress(step=step, total_steps=total, loss=loss, lr=lr, eta_s=eta, updated_at=NOW - 5)


def scene_jobs() -> list[Job]:
    """A hero sweep (batch 1) in every state, and a few other jobs."""
    run = {"state": JobState.RUNNING, "attempts": 1, "batch_id": 1, "vram_gb": 18.0}
    jobs = [
        _job(
            1,
            "hero-r16-lr1e-4",
            batch_id=1,
            state=JobState.COMPLETED,
            attempts=1,
            started_at=NOW - 5400,
            ended_at=NOW - 3600,
            gpu_ids=(0,),
            exit_code=0,
            progress=_progress(2000, 2000, 0.0712, 1e-4, 0),
            priority=5,
        ),
        _job(
            2,
            "hero-r16-lr5e-5",
            **run,
            started_at=NOW - 1500,
            gpu_ids=(0,),
            progress=_progress(1450, 2000, 0.0841, 5e-5, 570),
            priority=5,
            executor_ref="@3",
        ),
        _job(
            3,
            "hero-r32-lr1e-4",
            **run,
            started_at=NOW - 1200,
            gpu_ids=(1,),
            progress=_progress(980, 2000, 0.0903, 1e-4, 1250),
            priority=5,
            executor_ref="@4",
        ),
        _job(
            4,
            "hero-r32-lr5e-5",
            **run,
            started_at=NOW - 600,
            gpu_ids=(2, 3),
            gpus=2,
            progress=_progress(310, 2000, 0.1385, 5e-5, 3270),
            priority=5,
            executor_ref="@5",
        ),
        _job(
            5,
            "hero-r64-lr1e-4",
            batch_id=1,
            state=JobState.PENDING,
            priority=5,
            reason="waiting for 1 GPU with 18 GiB free (all 4 busy)",
            vram_gb=18.0,
        ),
        _job(
            6,
            "hero-r64-lr5e-5",
            batch_id=1,
            state=JobState.PENDING,
            priority=5,
            reason="waiting for 1 GPU with 18 GiB free (all 4 busy)",
            vram_gb=18.0,
        ),
        _job(
            7,
            "hero-merge",
            batch_id=1,
            state=JobState.PENDING,
            gpus=0,
            reason="dependency: waits for 5 jobs (afterok)",
        ),
        _job(
            8,
            "style-anime-v2",
            state=JobState.FAILED,
            attempts=3,
            retries=2,
            user="jon",
            started_at=NOW - 4000,
            ended_at=NOW - 3900,
            gpu_ids=(1,),
            exit_code=1,
            failure_class=FailureClass.OOM,
            reason="CUDA out of memory on GPU 1 (attempt 3 of 3)",
        ),
        _job(9, "style-anime-v3", state=JobState.HELD, user="jon", reason="held by user"),
        _job(
            10,
            "face-id-test",
            state=JobState.CANCELLED,
            user="jon",
            started_at=NOW - 3000,
            ended_at=NOW - 2950,
            failure_class=FailureClass.CANCELLED,
            reason="cancelled by user",
        ),
        _job(
            11,
            "ablation-no-te",
            state=JobState.PENDING,
            user="ana",
            priority=-2,
            reason="priority: 6 jobs ahead",
        ),
    ]
    return jobs


def scene_series(job: Job, points: int = 400) -> list[MetricPoint]:
    """A believable, seeded loss curve up to the job's step."""
    if job.progress is None or not job.progress.step:
        return []
    rng = random.Random(job.id)
    last = job.progress.step
    floor = 0.06 + 0.005 * (job.id % 4)
    out = []
    for i in range(points):
        step = max(1, round(last * (i + 1) / points))
        clean = floor + 0.25 * math.exp(-step / 350)
        out.append(MetricPoint(step, clean * (1 + rng.uniform(-0.25, 0.25)), job.progress.lr))
    return out


def scene_reading(tick: int = 0) -> MachineReading:
    """Four busy GPUs, one running hot, one with a foreign process."""
    util = (88, 93, 71, 69)
    used = (19.2, 20.1, 17.5, 17.3)
    temps = (71, 84, 66, 64)
    gpus = []
    for i in range(4):
        wave = math.sin((tick + 3 * i) / 5)
        gpus.append(
            GpuSnapshot(
                index=i,
                uuid=f"GPU-0000{i}",
                name="NVIDIA RTX 4090",
                memory_total_gb=24.0,
                memory_used_gb=round(used[i] + 0.6 * wave, 2),
                utilization=float(max(0, min(100, round(util[i] + 8 * wave)))),
                temperature_c=float(temps[i]),
                power_w=float(250 + 10 * i),
                power_limit_w=450.0,
                processes=(GpuProcess(9000 + i, used[i]),),
                simulated=False,
            )
        )
    jobs: Mapping[int, tuple[tuple[int, str], ...]] = {
        0: ((2, "hero-r16-lr5e-5"),),
        1: ((3, "hero-r32-lr1e-4"),),
        2: ((4, "hero-r32-lr5e-5"),),
        3: ((4, "hero-r32-lr5e-5"),),
    }
    foreign = {1: (ForeignProcess(4242, "jupyter-kernel", 1.5),)}
    wave = math.sin(tick / 5)
    return MachineReading(
        taken_at=NOW + tick,
        gpus=tuple(GpuPanel(g, jobs.get(g.index, ()), foreign.get(g.index, ())) for g in gpus),
        ram_used_gb=round(41.5 + wave, 2),
        ram_total_gb=128.0,
        cpu_percent=float(34 + round(6 * wave)),
    )


def scene_cluster_reading(tick: int = 0) -> MachineReading:
    """Slurm mode: three nodes of a partition, one full, one drained; the nodes are read
    every fifth tick (as the facade reads them less often than the rest)."""
    read = tick - tick % 5
    wave = math.sin(read / 5)
    busy = 24 + round(8 * wave)
    nodes = (
        NodePanel(
            name="gpu01",
            state="mixed",
            partition="gpu",
            gpus_used=2 if read % 10 else 3,
            gpus_total=4,
            cpus_used=busy,
            cpus_total=64,
            mem_used_gb=round(180.0 + 20 * wave, 1),
            mem_total_gb=512.0,
            gres="gpu:a100:4",
            jobs=((2, "hero-r16-lr5e-5"), (3, "hero-r32-lr1e-4")),
        ),
        NodePanel(
            name="gpu02",
            state="allocated",
            partition="gpu",
            gpus_used=4,
            gpus_total=4,
            cpus_used=64,
            cpus_total=64,
            mem_used_gb=480.0,
            mem_total_gb=512.0,
            gres="gpu:a100:4",
            jobs=((4, "hero-r32-lr5e-5"),),
        ),
        NodePanel(
            name="gpu03",
            state="drained",
            partition="gpu",
            gpus_used=0,
            gpus_total=4,
            cpus_used=0,
            cpus_total=64,
            mem_used_gb=0.0,
            mem_total_gb=512.0,
            gres="gpu:a100:4",
            reason="ECC errors on GPU 2 [admin@14:02]",
        ),
    )
    return MachineReading(
        taken_at=NOW + tick,
        gpus=(),
        ram_used_gb=round(11.5 + wave, 2),
        ram_total_gb=64.0,
        cpu_percent=float(12 + round(4 * wave)),
        nodes=nodes,
        cluster="Slurm partition gpu",
        nodes_at=NOW + read,
    )


def scene_events() -> list[ev.Event]:
    """Newest first."""
    out: list[ev.Event] = [
        ev.JobSubmitted(job_id=i, name=n, at=NOW - 7000 + i)
        for i, n in ((1, "hero-r16-lr1e-4"), (2, "hero-r16-lr5e-5"), (3, "hero-r32-lr1e-4"))
    ]
    out += [
        ev.JobStarted(job_id=1, name="hero-r16-lr1e-4", gpu_ids=(0,), at=NOW - 5400),
        ev.JobFailed(
            job_id=8,
            name="style-anime-v2",
            reason="CUDA out of memory on GPU 1",
            failure_class="oom",
            exit_code=1,
            at=NOW - 3900,
        ),
        ev.CheckpointSaved(
            job_id=1,
            name="hero-r16-lr1e-4",
            step=1000,
            path=str(ROOT / "jobs/1/hero-r16-lr1e-4-step00001000.safetensors"),
            at=NOW - 4500,
        ),
        ev.CheckpointSaved(
            job_id=1,
            name="hero-r16-lr1e-4",
            step=2000,
            path=str(ROOT / "jobs/1/hero-r16-lr1e-4.safetensors"),
            at=NOW - 3600,
        ),
        ev.JobCompleted(job_id=1, name="hero-r16-lr1e-4", runtime_s=1800.0, at=NOW - 3600),
        ev.JobStarted(job_id=2, name="hero-r16-lr5e-5", gpu_ids=(0,), at=NOW - 1500),
        ev.JobStarted(job_id=3, name="hero-r32-lr1e-4", gpu_ids=(1,), at=NOW - 1200),
        ev.CheckpointSaved(
            job_id=2,
            name="hero-r16-lr5e-5",
            step=1000,
            path=str(ROOT / "jobs/2/hero-r16-lr5e-5-step00001000.safetensors"),
            at=NOW - 400,
        ),
        ev.JobStarted(job_id=4, name="hero-r32-lr5e-5", gpu_ids=(2, 3), at=NOW - 600),
        ev.EngineMessage(message="GPU 1 is at 84°C", severity="warning", at=NOW - 60),
    ]
    return sorted(out, key=lambda e: e.at, reverse=True)
