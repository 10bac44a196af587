"""Hold, release and reprioritise attempts that loradeck has already handed to Slurm.

While Slurm holds such an attempt (``scontrol hold``), loradeck shows its job HELD with
Slurm's reason (``JobHeldUser``, ``JobHeldAdmin``); ``scontrol release`` hands it back
(RUNNING in loradeck: in Slurm's queue). :mod:`loradeck.core.actions` does the store's
side of a person's hold, release or priority change; :meth:`SlurmHolds.sync` keeps the two
in step once per engine pass, whoever changed Slurm. What Slurm 22.05 does (found on the
dev cluster), and what follows from it:

* ``scontrol hold`` of a *running* job succeeds and changes nothing (the job runs on):
  so Slurm's state is read first, only a pending job is held, and a hold that raced with
  the job's start is undone.
* ``scontrol update Nice=`` of a held job releases it (its priority leaves 0): so the new
  nice of a held job waits in its folder (``slurm-nice.json``) and follows the release.
* A negative nice (a job above others) is for Slurm operators; anyone else gets Slurm's
  ``Access/permission denied``. The nice of a running job no longer matters.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loradeck.core.actions import held_in_slurm, into_slurm_hold, out_of_slurm_hold
from loradeck.core.errors import ExecutorError
from loradeck.core.executor.slurm_commands import SlurmCommandError, SlurmCommands
from loradeck.core.executor.slurm_queue import UNKNOWN_ID, SlurmQueue
from loradeck.core.executor.slurm_states import SlurmJob
from loradeck.core.models import Job, JobState

if TYPE_CHECKING:
    from loradeck.core.store import Store

#: Where a held job's new nice waits for its release (in the job's folder).
NICE_FILE = "slurm-nice.json"
#: What Slurm says about a job that has ended, to hold, release or renice.
FINISHED = "Job has already finished"


class LogWatcher(Protocol):
    """The part of the engine's log monitor that holds touch (JobMonitor)."""

    def watch(self, job: Job) -> None: ...

    def unwatch(self, job: Job) -> None: ...


def operator_hint(priority: int) -> str:
    """Why Slurm may refuse the nice of ``priority``, for the error message."""
    if priority <= 0:
        return ""
    return (
        f" (priority {priority} is Nice={-priority}: only Slurm operators may set a negative nice)"
    )


class SlurmHolds:
    """The Slurm side of holds and priorities, and keeping them in step with the store."""

    def __init__(self, commands: SlurmCommands, queue: SlurmQueue) -> None:
        self.commands = commands
        self.queue = queue
        self._held_seen: set[int] = set()
        """Jobs seen held in Slurm by :meth:`sync`: their logs are followed again once
        they are released."""

    # ----------------------------------------------------------------- a person's acts

    def hold(self, job: Job, ref: str) -> SlurmJob:
        """``scontrol hold`` of the attempt while Slurm has not started it; Slurm's row
        afterwards (``PENDING (JobHeldUser)``). Raises :class:`ExecutorError` with
        Slurm's state or words when it is running, has ended, or Slurm refuses."""
        row = self._pending_row(job, ref, "hold")
        if row.held:
            return row
        try:
            self.commands.run("scontrol", "hold", ref)
        except SlurmCommandError as err:
            raise ExecutorError(
                f"job {job.id}: Slurm did not hold job {ref}: {err.stderr or err.message}",
                title="hold refused",
            ) from err
        after = self.queue.query({ref}).get(ref)
        if after is None or not after.held:
            # It started (or ended) between the look and the hold: Slurm holds a running
            # job without effect, so give it back its priority and say what happened.
            with contextlib.suppress(ExecutorError):
                self.commands.run("scontrol", "release", ref, quiet_errors=(FINISHED, UNKNOWN_ID))
            now = after.describe() if after is not None else "gone from Slurm"
            raise ExecutorError(
                f"job {job.id}: Slurm started job {ref} before it could be held ({now}); "
                "only a job waiting in Slurm's queue can be held: cancel it instead",
                title="hold refused",
            )
        return after

    def release(self, job: Job, ref: str) -> tuple[SlurmJob | None, str]:
        """``scontrol release``, then the nice chosen while it was held. Slurm's row
        afterwards (None when Slurm no longer knows the job: it then ended, and the
        engine concludes it) and a problem to report ("" when none): a refused nice
        does not undo the release."""
        try:
            self.commands.run("scontrol", "release", ref, quiet_errors=(FINISHED, UNKNOWN_ID))
        except SlurmCommandError as err:
            raise ExecutorError(
                f"job {job.id}: Slurm did not release job {ref}: {err.stderr or err.message}",
                title="release refused",
            ) from err
        nice = self._take_deferred_nice(job)
        row = self.queue.query({ref}).get(ref)
        problem = ""
        if nice is not None and row is not None and row.state == "PENDING" and row.nice != nice:
            try:
                self.commands.run("scontrol", "update", f"JobId={ref}", f"Nice={nice}")
            except SlurmCommandError as err:
                problem = (
                    f"job {job.id}: released, but Slurm did not change the priority of "
                    f"job {ref}{operator_hint(-nice)}: {err.stderr or err.message}"
                )
        return row, problem

    def set_priority(self, job: Job, ref: str, priority: int) -> None:
        """Slurm's nice of the attempt becomes ``-priority``: now while it waits in
        Slurm's queue, on release while it is held, never once it runs (too late to
        matter). Raises :class:`ExecutorError` with Slurm's words when it refuses."""
        row = self.queue.query({ref}).get(ref)
        nice = -priority
        if row is None or row.ended or row.state != "PENDING" or row.nice == nice:
            return
        if row.held:
            self._defer_nice(job, nice)
            return
        try:
            self.commands.run("scontrol", "update", f"JobId={ref}", f"Nice={nice}")
        except SlurmCommandError as err:
            raise ExecutorError(
                f"job {job.id}: Slurm did not change the priority of job {ref}"
                f"{operator_hint(priority)}: {err.stderr or err.message}; "
                "loradeck's priority is unchanged",
                title="priority not changed",
            ) from err

    # ----------------------------------------------------------------- each engine pass

    def sync(self, jobs: Iterable[Job], store: Store, monitor: LogWatcher | None) -> None:
        """Keep loradeck's HELD and Slurm's holds in step (call once per engine pass,
        after the pass's squeue):

        * a handed-over job that Slurm holds (``scontrol hold`` by hand) becomes HELD;
        * a held job that Slurm no longer holds (released, started, ended or forgotten
          outside loradeck) is handed over again (RUNNING), and the engine follows it;
        * a held job's log is not followed (it has none, and the stall watchdog must not
          stop it); once released, it is followed again.
        """
        for job in jobs:
            if job.state == JobState.RUNNING and job.id in self._held_seen:
                self._held_seen.discard(job.id)
                if monitor is not None:
                    monitor.watch(job)
            if held_in_slurm(job):
                self._keep_held(job, store, monitor)
            elif job.state == JobState.RUNNING and job.cancel_requested_at is None:
                self._notice_hold(job, store, monitor)

    def _keep_held(self, job: Job, store: Store, monitor: LogWatcher | None) -> None:
        assert job.executor_ref is not None
        self._held_seen.add(job.id)
        if monitor is not None:
            monitor.unwatch(job)
        row = self.queue.row(job.executor_ref)
        if row is not None and row.held:
            return
        reason = row.describe() if row is not None else f"slurm: job {job.executor_ref} is gone"

        def apply(current: Job) -> Job:
            if not held_in_slurm(current) or current.attempts != job.attempts:
                return current
            return out_of_slurm_hold(current, f"released in Slurm; {reason}")

        store.update(job.id, apply)

    def _notice_hold(self, job: Job, store: Store, monitor: LogWatcher | None) -> None:
        ref = job.executor_ref
        row = self.queue.cached(ref) if ref else None
        if row is None or not row.held:
            return

        def apply(current: Job) -> Job:
            if (
                current.state != JobState.RUNNING
                or current.attempts != job.attempts
                or current.cancel_requested_at is not None
            ):
                return current
            return into_slurm_hold(current, f"held in Slurm; {row.describe()}")

        if held_in_slurm(store.update(job.id, apply)):
            self._held_seen.add(job.id)
            if monitor is not None:
                monitor.unwatch(job)

    # ----------------------------------------------------------------- helpers

    def _pending_row(self, job: Job, ref: str, doing: str) -> SlurmJob:
        row = self.queue.query({ref}).get(ref)
        if row is None:
            raise ExecutorError(
                f"job {job.id}: Slurm no longer knows job {ref}, so it cannot {doing} it",
                title=f"{doing} refused",
            )
        if row.state != "PENDING":
            what = "has ended" if row.ended else "is running it"
            raise ExecutorError(
                f"job {job.id}: Slurm {what} ({row.describe()}, job {ref}); only a job "
                f"waiting in Slurm's queue can be {doing}ed"
                + ("; cancel it instead" if not row.ended else ""),
                title=f"{doing} refused",
            )
        return row

    def _defer_nice(self, job: Job, nice: int) -> None:
        path = job.job_dir / NICE_FILE
        tmp = path.with_name(f".{NICE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"attempt": job.attempts, "nice": nice}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ExecutorError(f"job {job.id}: cannot write {path}: {err}") from err

    def _take_deferred_nice(self, job: Job) -> int | None:
        """The nice chosen while the current attempt was held, once (the file goes)."""
        path: Path = job.job_dir / NICE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        path.unlink(missing_ok=True)
        if not isinstance(data, dict) or data.get("attempt") != job.attempts:
            return None
        nice = data.get("nice")
        return nice if isinstance(nice, int) and not isinstance(nice, bool) else None
