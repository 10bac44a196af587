"""What a simulation reports: makespan against its lower bound, utilisation, waits, Gantt."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from loradeck.core.models import Dependency, JobState
from loradeck.core.scheduler.text import fmt_duration
from loradeck.core.settings import SchedulerSettings

#: Gantt labels: job id N is drawn as _LABELS[(N - 1) % len(_LABELS)].
_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_IDLE = "."


@dataclass(frozen=True)
class SimJobResult:
    """One simulated job: when it waited, ran and where."""

    job_id: int
    name: str
    user: str
    project: str
    priority: int
    gpus: int
    submitted: float
    started: float | None
    """None when it never ran (a failed dependency, or held)."""
    ended: float | None
    gpu_ids: tuple[int, ...]
    state: JobState
    reason: str
    """Why it never ran, when it did not."""

    @property
    def wait_s(self) -> float | None:
        return None if self.started is None else self.started - self.submitted

    @property
    def run_s(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


class WaitStats(NamedTuple):
    """Waits of one priority class, in seconds."""

    n_jobs: int
    mean_s: float
    p95_s: float


@dataclass(frozen=True)
class SimReport:
    """The outcome of one :func:`~loradeck.core.scheduler.simulate.simulate` run."""

    strategy: str
    backfill: bool
    gpu_ids: tuple[int, ...]
    jobs: tuple[SimJobResult, ...]
    """Every job, by id."""
    lower_bound_s: float
    """max(GPU-time / GPUs, longest job, longest dependency chain, ...): no schedule beats it."""
    gpu_seconds: float
    """GPU-seconds the jobs held (a shared GPU counts by the share a job declared)."""
    passes: int
    """Scheduling passes run."""

    @property
    def makespan_s(self) -> float:
        """From the first submission to the last end."""
        ran = [j for j in self.jobs if j.ended is not None]
        if not ran:
            return 0.0
        return max(j.ended or 0.0 for j in ran) - min(j.submitted for j in self.jobs)

    @property
    def ratio(self) -> float:
        """Makespan over its lower bound (1.0 is perfect)."""
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s > 0 else 1.0

    @property
    def utilisation(self) -> float:
        """Share of GPU time (GPUs x makespan) that jobs held, 0..1."""
        span = self.makespan_s * len(self.gpu_ids)
        return min(self.gpu_seconds / span, 1.0) if span > 0 else 0.0

    @property
    def waits(self) -> Mapping[int, WaitStats]:
        """Priority class -> waits of its jobs that ran, highest class first."""
        by_class: dict[int, list[float]] = {}
        for job in self.jobs:
            if job.wait_s is not None:
                by_class.setdefault(job.priority, []).append(job.wait_s)
        return {
            prio: WaitStats(len(w), math.fsum(w) / len(w), percentile(w, 95.0))
            for prio, w in sorted(by_class.items(), reverse=True)
        }

    @property
    def not_run(self) -> tuple[SimJobResult, ...]:
        return tuple(j for j in self.jobs if j.started is None)

    def format_text(self, width: int = 100) -> str:
        """Summary lines, then a text Gantt chart (one row per GPU), ``width`` columns."""
        backfill = "on" if self.backfill else "off"
        lines = [
            f"{len(self.jobs)} jobs on {len(self.gpu_ids)} GPUs, "
            f"strategy {self.strategy}, backfill {backfill}",
            f"makespan     {fmt_duration(self.makespan_s)} (lower bound "
            f"{fmt_duration(self.lower_bound_s)}, ratio {self.ratio:.3f})",
            f"utilisation  {100 * self.utilisation:.1f}% of GPU time",
        ]
        for index, (prio, stats) in enumerate(self.waits.items()):
            head = "waits        " if index == 0 else "             "
            lines.append(
                f"{head}priority {prio}: mean {fmt_duration(stats.mean_s)}, "
                f"p95 {fmt_duration(stats.p95_s)} ({stats.n_jobs} jobs)"
            )
        for job in self.not_run[:5]:
            lines.append(f"never ran    job {job.job_id} {job.name}: {job.reason}")
        if len(self.not_run) > 5:
            lines.append(f"never ran    ... and {len(self.not_run) - 5} more")
        lines.extend(self.gantt(width))
        return "\n".join(lines)

    def gantt(self, width: int = 100) -> list[str]:
        """One row per GPU (and one for CPU jobs, if any); each column a time bucket that
        shows the job holding it longest; a legend when there are few enough jobs."""
        span = self.makespan_s
        if span <= 0 or not self.jobs:
            return []
        rows_of: list[str] = [f"GPU {g}" for g in self.gpu_ids]
        if any(j.gpus == 0 and j.started is not None for j in self.jobs):
            rows_of.append("CPU")
        label_w = max(len(r) for r in rows_of)
        cols = max(width - label_w - 2, 10)
        bucket = span / cols
        origin = min(j.submitted for j in self.jobs)
        cover = {row: [dict[int, float]() for _ in range(cols)] for row in rows_of}
        for job in self.jobs:
            if job.started is None or job.ended is None:
                continue
            rows = [f"GPU {g}" for g in job.gpu_ids] if job.gpus else ["CPU"]
            first = int((job.started - origin) / bucket)
            last = min(int((job.ended - origin) / bucket), cols - 1)
            for col in range(max(first, 0), last + 1):
                held = min(job.ended - origin, (col + 1) * bucket) - max(
                    job.started - origin, col * bucket
                )
                for row in rows:
                    if held > 0 and row in cover:
                        cell = cover[row][col]
                        cell[job.job_id] = cell.get(job.job_id, 0.0) + held
        out = [f"Gantt: one column = {fmt_duration(bucket)}"]
        for row in rows_of:
            cells = "".join(
                _label(max(cell, key=lambda j: (cell[j], -j))) if cell else _IDLE
                for cell in cover[row]
            )
            out.append(f"{row:<{label_w}} |{cells}")
        out.append(" " * (label_w + 2) + "0" + fmt_duration(span).rjust(cols - 1))
        out.extend(self._legend(width))
        return out

    def _legend(self, width: int) -> list[str]:
        if len(self.jobs) > len(_LABELS):
            return [
                f"job N is drawn as {_LABELS[0]}=1, {_LABELS[1]}=2, ... repeating every "
                f"{len(_LABELS)} jobs; '{_IDLE}' is idle"
            ]
        lines: list[str] = []
        line = "legend:"
        for job in self.jobs:
            item = f" {_label(job.job_id)}={job.name}"
            if len(line) + len(item) > width and line != "legend:":
                lines.append(line)
                line = "       "
            line += item
        lines.append(line)
        return lines


def _label(job_id: int) -> str:
    return _LABELS[(job_id - 1) % len(_LABELS)]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def lower_bound(
    results: Sequence[SimJobResult],
    deps: Sequence[tuple[Dependency, ...]],
    weights: Sequence[float],
    gpu_count: int,
    settings: SchedulerSettings,
) -> float:
    """No schedule of the jobs that ran can finish sooner than this.

    The largest of: their GPU-time (shared GPUs by declared share) over the GPU count; the
    longest job (from its submission); the longest dependency chain; with
    ``max_concurrent_jobs``, their total run time over that limit."""
    run = {r.job_id: r.run_s for r in results if r.started is not None}
    if not run:
        return 0.0
    origin = min(r.submitted for r in results)
    bounds = [max(r.submitted - origin + r.run_s for r in results if r.job_id in run)]
    gpu_time = math.fsum(
        r.gpus * r.run_s * weights[r.job_id - 1] for r in results if r.job_id in run
    )
    if gpu_count and gpu_time:
        bounds.append(gpu_time / gpu_count)
    if settings.max_concurrent_jobs:
        bounds.append(math.fsum(run.values()) / settings.max_concurrent_jobs)
    bounds.append(_longest_chain(run, deps))
    return max(bounds)


def gpu_seconds(results: Sequence[SimJobResult], weights: Sequence[float]) -> float:
    """GPU-seconds held by the jobs, a shared GPU counted by declared share."""
    return math.fsum(r.gpus * r.run_s * weights[r.job_id - 1] for r in results)


def _longest_chain(run: Mapping[int, float], deps: Sequence[tuple[Dependency, ...]]) -> float:
    """Longest sum of run times along a dependency path (the graph has no cycles)."""
    finish: dict[int, float] = {}
    for root in run:
        stack = [root]
        while stack:
            node = stack[-1]
            if node in finish:
                stack.pop()
                continue
            parents = [d.job_id for d in deps[node - 1] if d.job_id in run]
            todo = [p for p in parents if p not in finish]
            if todo:
                stack.extend(todo)
                continue
            finish[node] = run[node] + max((finish[p] for p in parents), default=0.0)
            stack.pop()
    return max(finish.values(), default=0.0)


def compare_table(reports: Sequence[SimReport]) -> str:
    """Side-by-side figures of several runs (``loradeck simulate --compare``)."""
    header = (
        f"{'strategy':<11} {'backfill':<8} {'makespan':>9} {'/bound':>7} {'util':>6} "
        f"{'mean wait':>10} {'p95 wait':>9}"
    )
    lines = [header, "-" * len(header)]
    for rep in reports:
        waits = [j.wait_s for j in rep.jobs if j.wait_s is not None]
        mean = math.fsum(waits) / len(waits) if waits else 0.0
        lines.append(
            f"{rep.strategy:<11} {'on' if rep.backfill else 'off':<8} "
            f"{fmt_duration(rep.makespan_s):>9} {rep.ratio:>7.3f} "
            f"{100 * rep.utilisation:>5.1f}% {fmt_duration(mean):>10} "
            f"{fmt_duration(percentile(waits, 95.0)):>9}"
        )
    return "\n".join(lines)
