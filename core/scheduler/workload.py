"""Seeded synthetic workloads: the standard makespan benchmark and a long queue for speed.

Both are pure functions of their seed, so a figure measured today can be measured again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from loradeck.core.models import Dependency, DependencyRef, Job, JobSpec, JobState
from loradeck.core.scheduler.model import ClusterView

_USERS = ("ana", "ben", "chen", "dana")
_PROJECTS = ("portraits", "styles")
_STEMS = ("hero", "style", "pet", "product", "anime", "landscape")


@dataclass(frozen=True)
class Workload:
    """Jobs with their true durations, and the machine they run on."""

    jobs: tuple[JobSpec, ...]
    durations: tuple[float, ...]
    """True run time of each job in seconds (the simulator's ground truth)."""
    cluster: ClusterView


def standard_workload(n: int = 500, seed: int = 0, gpus: int = 8) -> Workload:
    """The makespan benchmark: ``n`` jobs on ``gpus`` 80 GiB GPUs.

    70% ask for 1 GPU, 20% for 2, 10% for 4 (whole GPUs). Durations are log-normal (median
    30 min, sigma 0.8, cut to 2 min..12 h); each job's ``est_minutes`` is its duration
    times a log-normal error (sigma 0.2), as a person's guess would be. Priorities 0 (70%),
    5 (20%), 10 (10%); four users, two projects; 10% of the jobs depend (afterok) on an
    earlier job, as an evaluation depends on its training run.
    """
    rng = random.Random(seed)
    specs: list[JobSpec] = []
    durations: list[float] = []
    for index in range(n):
        roll = rng.random()
        want = 1 if roll < 0.7 else 2 if roll < 0.9 else 4
        seconds = min(max(rng.lognormvariate(math.log(30 * 60), 0.8), 120.0), 12 * 3600.0)
        guess = seconds * rng.lognormvariate(0.0, 0.2)
        prio_roll = rng.random()
        priority = 0 if prio_roll < 0.7 else 5 if prio_roll < 0.9 else 10
        depends: list[DependencyRef] = []
        if index and rng.random() < 0.1:
            depends.append(DependencyRef(job=rng.randrange(1, index + 1)))
        specs.append(
            JobSpec(
                name=f"{rng.choice(_STEMS)}-{index + 1}",
                command="true",
                gpus=want,
                est_minutes=guess / 60.0,
                priority=priority,
                user=rng.choice(_USERS),
                project=rng.choice(_PROJECTS),
                depends_on=depends,
            )
        )
        durations.append(seconds)
    return Workload(tuple(specs), tuple(durations), ClusterView.uniform(gpus, 80.0))


@dataclass(frozen=True)
class Queue:
    """A store's worth of active jobs for one scheduling pass."""

    jobs: tuple[Job, ...]
    dep_states: dict[int, JobState]
    cluster: ClusterView
    now: float


def long_queue(n: int = 10_000, seed: int = 0, gpus: int = 8, busy_gpus: int = 0) -> Queue:
    """``n`` waiting jobs (1/2/4 GPUs at 60/25/15%, mixed priorities and users, 20% with
    a dependency) on ``gpus`` GPUs, of which ``busy_gpus`` run a job already.

    A dependency points at an archived job (completed, or failed) or an earlier job of the
    queue, as in a real store."""
    rng = random.Random(seed)
    out = Path("/bench")
    base = 1_700_000_000.0
    now = base + n * 5.0 + 3600.0
    jobs: list[Job] = []
    dep_states: dict[int, JobState] = {}
    first_id = 1000
    for gpu in range(busy_gpus):
        jobs.append(_running(first_id - busy_gpus + gpu, gpu, base, now, out))
    for index in range(n):
        job_id = first_id + index
        roll = rng.random()
        want = 1 if roll < 0.6 else 2 if roll < 0.85 else 4
        deps: tuple[Dependency, ...] = ()
        if rng.random() < 0.2:
            if index and rng.random() < 0.5:
                target = first_id + rng.randrange(index)
            else:
                target = rng.randrange(1, first_id - busy_gpus)
                dep_states[target] = rng.choice((JobState.COMPLETED, JobState.FAILED))
            deps = (Dependency(job_id=target),)
        spec = JobSpec(
            name=f"{rng.choice(_STEMS)}-{index}",
            command="true",
            gpus=want,
            priority=rng.choice((0, 0, 0, 5, 10)),
            user=rng.choice(_USERS),
            project=rng.choice(_PROJECTS),
            est_minutes=rng.choice((None, 20.0, 45.0, 120.0)),
        )
        jobs.append(
            Job(
                id=job_id,
                spec=spec,
                deps=deps,
                command="true",
                output_dir=out,
                log_file=out / "log",
                created_at=base + index * 5.0,
            )
        )
    for job in jobs:
        dep_states.setdefault(job.id, job.state)
    return Queue(tuple(jobs), dep_states, ClusterView.uniform(gpus, 80.0), now)


def _running(job_id: int, gpu: int, base: float, now: float, out: Path) -> Job:
    job = Job(
        id=job_id,
        spec=JobSpec(name=f"running-{gpu}", command="true", est_minutes=90.0),
        command="true",
        output_dir=out,
        log_file=out / "log",
        created_at=base - 7200.0,
    )
    return job.transition(JobState.RUNNING, started_at=now - 600.0 * (gpu + 1), gpu_ids=(gpu,))
