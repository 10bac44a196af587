"""How an attempt's end becomes the job's next state: pure decisions, no I/O.

The engine gathers the facts (exit status, what the log showed, why it was stopped)
into an :class:`AttemptEnd`; :func:`conclude` says the new job snapshot, whether it is
retried (and after how long), and which edits to make to its trainer config copy.
"""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass, field

from loradeck.core.models import FailureClass, Job, JobState, OomPolicy

#: How much the learning rate shrinks on a divergence retry, and the batch on OOM.
BATCH_SHRINK = 0.5


@dataclass(frozen=True)
class AttemptEnd:
    """What is known about how one attempt ended."""

    exit_code: int | None = None
    signal: int | None = None
    lost: bool = False
    timed_out: bool = False
    cancelled: bool = False
    oom: bool = False
    diverged: bool = False
    diverged_step: int | None = None
    stalled: bool = False
    vram_exceeded: bool = False
    launch_error: str | None = None
    detail: str | None = None
    """What the executor said about an end it caused (``slurm: NODE_FAIL``), for the
    reason of a lost, cancelled or out-of-memory attempt."""
    no_retry: bool = False
    """Do not retry whatever the job's retries say (a watchdog that kills for good)."""


@dataclass(frozen=True)
class Conclusion:
    job: Job
    retrying: bool = False
    delay_s: float = 0.0
    config_edits: dict[str, float] = field(default_factory=dict)
    """Multipliers for keys of the config copy: ``{"train_batch_size": 0.5}``."""
    raise_vram_to: float | None = None


def classify(end: AttemptEnd) -> tuple[FailureClass | None, str]:
    """The failure class and a human reason; ``(None, "")`` for a clean exit."""
    if end.cancelled:
        if end.detail:
            return FailureClass.CANCELLED, f"cancelled outside loradeck ({end.detail})"
        return FailureClass.CANCELLED, "cancelled by user"
    if end.timed_out:
        return FailureClass.TIMEOUT, "ran past its timeout"
    if end.launch_error is not None:
        return FailureClass.LAUNCH, f"could not start: {end.launch_error}"
    if end.diverged or end.diverged_step is not None:
        if end.diverged_step is None:
            return FailureClass.DIVERGED, "diverged (non-finite loss)"
        return FailureClass.DIVERGED, f"diverged at step {end.diverged_step}"
    if end.stalled:
        return FailureClass.STALLED, "stalled: no progress within the watchdog's limit"
    if end.vram_exceeded:
        return FailureClass.VRAM_GUARD, "used more GPU memory than it declared (VRAM guard)"
    if end.oom:
        if end.detail:
            return FailureClass.OOM, f"out of memory ({end.detail})"
        return FailureClass.OOM, "CUDA out of memory"
    if end.lost:
        if end.detail:
            return FailureClass.LOST, f"lost: {end.detail}"
        return FailureClass.LOST, "lost: its tmux window vanished without an exit status"
    if end.signal:
        try:
            name = signals.Signals(end.signal).name
        except ValueError:
            name = f"signal {end.signal}"
        return FailureClass.SIGNAL, f"killed by {name}"
    if end.exit_code not in (0, None):
        return FailureClass.EXIT_CODE, f"exit code {end.exit_code}"
    return None, ""


def retry_delay(job: Job) -> float:
    """Exponential backoff: retry_backoff, then doubled for each further attempt."""
    base = job.spec.retry_backoff or 0.0
    return float(base * 2.0 ** max(0, job.attempts - 1))


def conclude(
    job: Job,
    end: AttemptEnd,
    now: float,
    *,
    on_nan: str = "fail",
    nan_lr_scale: float = 0.5,
    gpu_total_gb: float | None = None,
) -> Conclusion:
    """The job after its current attempt ended as ``end``.

    ``gpu_total_gb`` is the largest GPU's memory (for the wait-for-memory OOM policy).
    """
    failure, reason = classify(end)
    if failure is None:
        done = job.transition(
            JobState.COMPLETED,
            ended_at=now,
            exit_code=end.exit_code if end.exit_code is not None else 0,
            reason="",
            failure_class=None,
        )
        return Conclusion(done)
    if failure == FailureClass.CANCELLED:
        return Conclusion(
            job.transition(
                JobState.CANCELLED,
                ended_at=now,
                reason=reason,
                failure_class=failure,
                exit_code=end.exit_code,
            )
        )
    if failure == FailureClass.TIMEOUT:
        return Conclusion(
            job.transition(
                JobState.TIMEOUT,
                ended_at=now,
                reason=reason,
                failure_class=failure,
                exit_code=end.exit_code,
            )
        )
    edits: dict[str, float] = {}
    raise_vram: float | None = None
    if failure == FailureClass.OOM:
        if job.spec.on_oom == OomPolicy.SMALLER_BATCH:
            edits = {"batch_size": BATCH_SHRINK, "grad_accum": 1 / BATCH_SHRINK}
        elif job.spec.on_oom == OomPolicy.WAIT_FOR_MEMORY:
            current = job.spec.vram_gb or gpu_total_gb
            if current is not None:
                # Never above the largest GPU, or the retry could never be placed.
                ceiling = gpu_total_gb if gpu_total_gb is not None else float("inf")
                raise_vram = round(min(current * 1.25, ceiling), 1)
    if failure == FailureClass.DIVERGED and on_nan == "retry_lower_lr":
        edits = {"lr": nan_lr_scale}
    budget = job.spec.retries
    if failure == FailureClass.DIVERGED and on_nan != "retry_lower_lr":
        budget = 0
    if failure == FailureClass.LAUNCH or end.no_retry:
        budget = 0
    if job.attempts <= budget:
        delay = retry_delay(job)
        notes = reason
        if edits.get("batch_size"):
            notes += "; batch size halved in the config copy"
        if edits.get("lr"):
            notes += f"; learning rate x{nan_lr_scale:g} in the config copy"
        if raise_vram is not None:
            notes += f"; now needs {raise_vram:g} GiB free"
        requeued = job.transition(
            JobState.PENDING,
            reason=f"retry {job.attempts}/{budget} in {delay:.0f} s after {notes}",
            failure_class=failure,
            exit_code=end.exit_code,
            not_before=now + delay,
            ended_at=now,
        )
        if raise_vram is not None:
            requeued = requeued.evolve(
                spec=requeued.spec.model_copy(update={"vram_gb": raise_vram})
            )
        return Conclusion(
            requeued,
            retrying=True,
            delay_s=delay,
            config_edits=edits,
            raise_vram_to=raise_vram,
        )
    return Conclusion(
        job.transition(
            JobState.FAILED,
            ended_at=now,
            reason=reason,
            failure_class=failure,
            exit_code=end.exit_code,
        )
    )
