"""The executor protocol: how the engine starts, watches and stops one attempt of a job.

An executor runs one *attempt* of a job at a time (``job.attempts`` is the number of the
attempt being started or running). The engine owns every decision (when to start, when a
job has timed out, what a lost job means); an executor only provides the primitives:
launch, poll, stop, and what crash recovery needs to find running attempts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from loradeck.core.errors import ExecutorError
from loradeck.core.models import Job

#: The default of ``extra_env``: an empty mapping that nobody can change.
NO_ENV: Mapping[str, str] = MappingProxyType({})


class AttemptStatus(StrEnum):
    """What an executor knows about the current attempt of a job."""

    RUNNING = "RUNNING"
    """Its process (or the window about to start it) is alive."""
    EXITED = "EXITED"
    """It ended and its exit status was recorded."""
    LOST = "LOST"
    """It is gone without a recorded exit status (tmux server killed, window closed)."""


@dataclass(frozen=True)
class AttemptResult:
    """The answer of :meth:`Executor.poll`."""

    status: AttemptStatus
    exit_code: int | None = None
    """The command's exit status as bash reports it (128+N when killed by signal N)."""
    signal: int | None = None
    """N when the command was killed by signal N (its exit status was 128+N)."""
    ended_at: float | None = None
    """When the attempt ended (epoch seconds)."""
    launch_error: str | None = None
    """Set when the command never started: the environment could not be activated or the
    workdir entered. The same text is in the job's log."""
    stopped: bool = False
    """True when loradeck's kill sequence had to kill the attempt's own runner, so the
    status was written by :meth:`Executor.stop` rather than by the attempt itself."""
    # The fields below are set by executors that hand jobs to a cluster scheduler (Slurm),
    # which ends attempts for reasons of its own; the tmux executor leaves the defaults.
    slurm_state: str | None = None
    """Slurm's state of the attempt (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED,
    TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, ...)."""
    reason: str | None = None
    """How the executor describes the attempt's state, for people (``"slurm: PENDING
    (Resources)"``, ``"slurm: TIMEOUT (TimeLimit)"``)."""
    timed_out: bool = False
    """The cluster ended it at its time limit (Slurm TIMEOUT or DEADLINE)."""
    oom: bool = False
    """The cluster ended it for using more memory than it asked for (OUT_OF_MEMORY)."""
    lost: bool = False
    """The cluster ended it for reasons of its own (NODE_FAIL, PREEMPTED, BOOT_FAIL):
    nothing the job did, so a retry may well succeed."""
    cancelled: bool = False
    """Cancelled on the cluster, not through loradeck (``scancel`` by a user or admin)."""
    dependency_never_satisfied: bool = False
    """It never started: the cluster dropped it because a dependency can no longer be
    satisfied. The attempt does not count; loradeck's own dependency rules decide."""


@dataclass(frozen=True)
class AdoptedAttempt:
    """One attempt an executor still holds, found again after a restart."""

    ref: str
    """The executor's handle (a tmux window id like ``@12``)."""
    job_id: int
    attempt: int
    alive: bool
    """Whether its process is still running (a tmux pane that is not dead)."""
    name: str = ""
    """The window name, for messages."""


class Executor(Protocol):
    """What the engine needs from a way of running jobs (tmux windows, Slurm)."""

    name: str

    def launch(
        self, job: Job, gpu_ids: tuple[int, ...], *, extra_env: Mapping[str, str] = NO_ENV
    ) -> str:
        """Start attempt ``job.attempts`` of ``job`` on ``gpu_ids``; return its executor_ref.

        Raises :class:`~loradeck.core.errors.ExecutorError` when it cannot start.
        """
        ...

    def poll(self, job: Job) -> AttemptResult:
        """EXITED when this attempt's exit status is recorded, RUNNING while it is alive,
        LOST otherwise."""
        ...

    def stop(self, job: Job, *, grace: float) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, ``grace`` seconds apart, to the whole
        process tree of the attempt; returns when every process is gone.

        Blocking: call it from a worker thread. Raises
        :class:`~loradeck.core.errors.ExecutorError` naming the processes that survived.
        """
        ...

    def pids(self, job: Job) -> list[int]:
        """The live processes of the current attempt (for mapping GPU memory to jobs)."""
        ...

    def close_window(self, job: Job) -> None:
        """Close what shows the attempt to a user (its tmux window); no-op if gone."""
        ...

    def attach_command(self, job: Job) -> list[str]:
        """argv that attaches a terminal to the attempt (from outside tmux)."""
        ...

    def adopt(self) -> dict[str, AdoptedAttempt]:
        """Every attempt this executor still holds, by executor_ref, for crash recovery."""
        ...


@runtime_checkable
class BatchLauncher(Protocol):
    """An executor that starts several attempts at once, cheaper than one by one (the
    tmux executor: one tmux call for every window of a scheduling pass)."""

    def launch_many(
        self,
        starts: Sequence[tuple[Job, tuple[int, ...]]],
        *,
        extra_env: Mapping[str, str] = NO_ENV,
    ) -> list[str | ExecutorError]:
        """Per (job, GPUs), in order: the executor_ref of the attempt started, or the
        error that kept it from starting (then nothing of it runs)."""
        ...


def launch_all(
    executor: Executor,
    starts: Sequence[tuple[Job, tuple[int, ...]]],
    *,
    extra_env: Mapping[str, str] = NO_ENV,
) -> list[str | ExecutorError]:
    """Start attempt ``job.attempts`` of each job: with :meth:`BatchLauncher.launch_many`
    where the executor has it, else one :meth:`Executor.launch` after another. Per start,
    in order, its executor_ref or the error that kept it from starting."""
    if not starts:
        return []
    if isinstance(executor, BatchLauncher):
        return executor.launch_many(starts, extra_env=extra_env)
    outcomes: list[str | ExecutorError] = []
    for job, gpu_ids in starts:
        try:
            outcomes.append(executor.launch(job, gpu_ids, extra_env=extra_env))
        except ExecutorError as err:
            outcomes.append(err)
    return outcomes
