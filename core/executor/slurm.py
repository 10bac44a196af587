"""Hand each job attempt to Slurm: ``sbatch`` to start, ``squeue`` to watch, ``scancel``.

Slurm places jobs (node, GPUs) and enforces their time limits; loradeck only decides
the order in which it hands jobs over (:mod:`loradeck.core.slurmmode`) and keeps
everything above: logs, parsing, retries (by resubmission), evaluation. A loradeck job is
RUNNING while its Slurm job is PENDING or RUNNING; :meth:`SlurmExecutor.slurm_reason`
says which (``slurm: PENDING (Resources)``).

Each attempt is one Slurm job, tagged ``--comment=loradeck:<home key>:<job id>:<attempt>``
so that a restarted loradeck finds it again even if it died between sbatch and storing
the id. The job's folder must be visible to the compute nodes: with
``slurm.shared_root`` set, job folders live under it (:attr:`Home.jobs_dir`) and a job
whose folder is elsewhere is refused. The batch script, the log and the exit status live
there (see :mod:`loradeck.core.executor.slurm_script`).

Hold, release and priority act in Slurm too (``scontrol``; see
:mod:`loradeck.core.executor.slurm_control`).

State comes from one ``squeue -t all -j <ids>`` per engine pass (:meth:`refresh`, or the
first :meth:`poll` of a pass: rows are cached for ``cache_ttl`` seconds). A job that has
ended is asked once more, for its ``N:S`` exit code: ``scontrol show job -o`` while Slurm
still holds it (``MinJobAge``), then ``sacct`` (with accounting) or ``sacct -c`` (the
jobcomp file).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import NO_ENV, AdoptedAttempt, AttemptResult, AttemptStatus
from loradeck.core.executor.jobfiles import AttemptInfo, JobFiles
from loradeck.core.executor.runscript import RunSpec
from loradeck.core.executor.slurm_commands import SlurmCommandError, SlurmCommands
from loradeck.core.executor.slurm_control import LogWatcher, SlurmHolds
from loradeck.core.executor.slurm_nodes import SlurmNode, read_nodes
from loradeck.core.executor.slurm_queue import UNKNOWN_ID, SlurmQueue
from loradeck.core.executor.slurm_script import (
    JobTagComment,
    check_extra_options,
    sbatch_args,
    write_batch_files,
)
from loradeck.core.executor.slurm_states import (
    NEVER_SATISFIED,
    SlurmJob,
    attempt_result,
    is_job_id,
    seconds_of,
)
from loradeck.core.home import Home
from loradeck.core.models import DependencyCondition, Job
from loradeck.core.settings import SlurmSettings

if TYPE_CHECKING:
    from loradeck.core.store import Store

_ALREADY_DONE = (UNKNOWN_ID, "already completing or completed")


class SlurmExecutor:
    """The :class:`~loradeck.core.executor.base.Executor` that hands jobs to Slurm."""

    name = "slurm"

    def __init__(
        self,
        settings: SlurmSettings,
        *,
        home: Home,
        commands: SlurmCommands | None = None,
        max_log_bytes: int = 512 * 2**20,
        python: str = sys.executable,
        cache_ttl: float = 1.0,
        poll_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``commands`` says how to run Slurm's commands (where they are, a deadline);
        ``max_log_bytes`` bounds each log; ``python`` runs the log tee on the compute
        node (it must exist there); ``cache_ttl`` is how long one squeue answers polls."""
        check_extra_options(settings.extra_sbatch)
        if max_log_bytes < 4096:
            raise ExecutorError(
                f"max_log_bytes must be at least 4096, got {max_log_bytes} "
                "(monitoring.max_log_mb in config.toml)"
            )
        self.settings = settings
        self.home = home
        self.commands = commands or SlurmCommands()
        self.home_key = home.key
        self.queue = SlurmQueue(self.commands, ttl=cache_ttl, clock=clock)
        self.holds = SlurmHolds(self.commands, self.queue)
        self._max_log_bytes = max_log_bytes
        self._python = python
        self._poll_interval = poll_interval
        self._clock = clock

    # ----------------------------------------------------------------- cluster

    def config(self) -> Mapping[str, str]:
        """``scontrol show config`` (read once): raises with Slurm's message when
        slurmctld cannot be reached."""
        return self.queue.config()

    def check(self) -> str:
        """A line saying which Slurm this is; raises :class:`ExecutorError` (with Slurm's
        own message) when its commands are missing or slurmctld does not answer."""
        config = self.config()
        version = config.get("SLURM_VERSION", "?")
        cluster = config.get("ClusterName", "?")
        partition = self.settings.partition or "the default partition"
        return f"Slurm {version}, cluster {cluster}, {partition}"

    def nodes(self) -> tuple[SlurmNode, ...]:
        """The nodes of the configured partition (all when none is set), with their GPUs."""
        return read_nodes(self.commands, partition=self.settings.partition)

    # ----------------------------------------------------------------- launch

    def launch(
        self, job: Job, gpu_ids: tuple[int, ...], *, extra_env: Mapping[str, str] = NO_ENV
    ) -> str:
        """Write the attempt's scripts and submit it with ``sbatch``; the Slurm job id.

        ``gpu_ids`` is ignored: Slurm picks the GPUs (``--gres=gpu:N``). Dependencies
        that Slurm still knows become ``--dependency``; the others have ended, and
        loradeck only hands a job over once they allow it."""
        attempt = job.attempts
        if attempt < 1:
            raise ExecutorError(
                f"job {job.id}: launch needs job.attempts to be the attempt being started "
                f"(1 or more), got {attempt}"
            )
        self._check_shared(job)
        files = JobFiles.of(job)
        files.prepare(job)
        token = secrets.token_hex(16)
        spec = RunSpec(
            job=job,
            attempt=attempt,
            gpu_ids=(),
            token=token,
            python=self._python,
            max_log_bytes=self._max_log_bytes,
            extra_env=extra_env,
        )
        tag = JobTagComment(self.home_key, job.id, attempt)
        args = sbatch_args(
            job, settings=self.settings, comment=tag.text(), after=self._dependencies(job)
        )
        write_batch_files(spec, args)
        launched_at = time.time()
        # Written before sbatch: a loradeck that dies in between finds the job by its tag.
        files.write_attempt(AttemptInfo(attempt, token, "", launched_at))
        try:
            out = self.commands.run("sbatch", *args)
        except SlurmCommandError as err:
            raise ExecutorError(
                f"job {job.id}: Slurm refused it: {err.stderr or err.message}",
                title="sbatch failed",
            ) from err
        except ExecutorError as err:
            self._withdraw(tag)  # an sbatch that timed out may have queued it after all
            raise ExecutorError(f"job {job.id}: {err.message}", title=err.title) from err
        ref = out.strip().split(";", 1)[0]  # "<id>" or "<id>;<cluster>"
        if not is_job_id(ref):
            self._withdraw(tag)
            raise ExecutorError(
                f"job {job.id}: sbatch --parsable printed {out.strip()!r}, not a job id",
                title="sbatch failed",
            )
        files.write_attempt(AttemptInfo(attempt, token, ref, launched_at))
        self.queue.watch(ref)
        return ref

    def _check_shared(self, job: Job) -> None:
        """A job's folder must be on ``slurm.shared_root``: the compute node writes its
        log and exit status there, and loradeck reads them on this (login) node."""
        root = self.settings.shared_root
        if root is None:
            return
        folder = Path(job.job_dir).resolve()
        if not folder.is_relative_to(root.resolve()):
            raise ExecutorError(
                f"job {job.id}: its folder {folder} is not under slurm.shared_root {root}, "
                "so the compute nodes could not write its log there. Jobs submitted in "
                f"Slurm mode get their folders under it (now {self.home.jobs_dir}); this "
                "one was submitted without it: submit it again",
                title="not on the shared root",
            )

    def _dependencies(self, job: Job) -> list[tuple[DependencyCondition, str]]:
        """``(condition, Slurm id)`` for each dependency whose Slurm job Slurm still knows."""
        refs: dict[int, str] = {}
        for dep in job.deps:
            ref = _latest_ref(self.home.job_dir(dep.job_id) / "attempt.json")
            if ref is not None:
                refs[dep.job_id] = ref
        if not refs:
            return []
        known = self.queue.query(set(refs.values()))
        return [
            (dep.condition, refs[dep.job_id])
            for dep in job.deps
            if dep.job_id in refs and refs[dep.job_id] in known
        ]

    def _withdraw(self, tag: JobTagComment) -> None:
        """Cancel any Slurm job carrying ``tag`` (best effort)."""
        with contextlib.suppress(ExecutorError):
            for row in self.queue.mine().values():
                if row.comment == tag.text() and not row.ended:
                    self.commands.run("scancel", row.job_id, quiet_errors=_ALREADY_DONE)

    # ----------------------------------------------------------------- watch

    def refresh(self, jobs: Iterable[Job]) -> None:
        """Ask Slurm about ``jobs`` (and every attempt still watched) in one call; the
        polls of this pass then read the answer. Call once per engine pass."""
        self.queue.refresh({ref for job in jobs if (ref := self._known_ref(job)) is not None})

    def poll(self, job: Job) -> AttemptResult:
        """RUNNING while Slurm may still run the attempt (PENDING counts), EXITED once
        Slurm says it ended, LOST when neither Slurm nor the job's folder knows it.

        Raises :class:`ExecutorError` with Slurm's message when Slurm cannot be asked."""
        files = JobFiles.of(job)
        recorded = files.result(job.attempts)
        ref = self._ref(job)
        if ref is None:
            return recorded or AttemptResult(
                AttemptStatus.LOST, reason="no Slurm job: it was never submitted"
            )
        row = self.queue.row(ref)
        if row is None:
            row = self.queue.forgotten(ref)
        if row is None:
            self.queue.forget(ref)
            return recorded or AttemptResult(
                AttemptStatus.LOST,
                reason=f"slurm: job {ref} is unknown to Slurm and left no exit status",
            )
        if row.state == "PENDING" and row.reason == NEVER_SATISFIED:
            # The site lets such jobs pend forever (no kill_invalid_depend): end it.
            self.commands.run("scancel", ref, quiet_errors=_ALREADY_DONE)
            return AttemptResult(
                AttemptStatus.EXITED,
                slurm_state=row.state,
                reason=row.describe(),
                dependency_never_satisfied=True,
            )
        if row.ended and recorded is None and row.state != "COMPLETED":
            # Slurm's N:S is needed only when the run script could not record a status.
            row = self.queue.final(row)
        return attempt_result(row, recorded)

    def slurm_job(self, job: Job) -> SlurmJob | None:
        """What the last squeue said about the current attempt (no Slurm call)."""
        ref = self._known_ref(job)
        return self.queue.cached(ref) if ref is not None else None

    def slurm_reason(self, job: Job) -> str | None:
        """``"slurm: PENDING (Resources)"``, ``"slurm: RUNNING on node3"``, from the last
        squeue (no Slurm call); None when Slurm has not been asked about the job."""
        row = self.slurm_job(job)
        return row.describe() if row is not None else None

    def pids(self, job: Job) -> list[int]:
        """None here: the attempt runs on a compute node."""
        return []

    # ----------------------------------------------------------------- control

    def stop(self, job: Job, *, grace: float) -> None:
        """``scancel`` the attempt (Slurm sends SIGTERM, then SIGKILL after its
        ``KillWait``) and return once Slurm says it ended. Blocking."""
        ref = self._ref(job)
        if ref is None:
            return
        row = self.queue.query({ref}).get(ref)
        if row is None or row.ended:
            return
        self.commands.run("scancel", ref, quiet_errors=_ALREADY_DONE)
        kill_wait = seconds_of(self.config().get("KillWait"), 30.0)
        deadline = self._clock() + max(grace, 0.0) + kill_wait + 30.0
        while True:
            row = self.queue.query({ref}).get(ref)
            if row is None or row.ended:
                return
            if self._clock() > deadline:
                raise ExecutorError(
                    f"job {job.id}: Slurm job {ref} is still {row.state} after scancel "
                    f"({row.describe()}); check the node, or cancel it again with scancel",
                    title="slurm job not ending",
                )
            time.sleep(self._poll_interval)

    def hold(self, job: Job) -> str:
        """``scontrol hold`` of the attempt while it waits in Slurm's queue; Slurm's
        state afterwards (``slurm: PENDING (JobHeldUser)``). Raises
        :class:`ExecutorError` when Slurm is running it (Slurm would "hold" it without
        effect), it has ended, or Slurm refuses (its words)."""
        return self.holds.hold(job, self._require_ref(job, "hold")).describe()

    def release(self, job: Job) -> tuple[str, str]:
        """``scontrol release``, then the priority chosen while it was held; Slurm's
        state afterwards and a problem that did not stop the release ("" if none)."""
        ref = self._require_ref(job, "release")
        row, problem = self.holds.release(job, ref)
        return (row.describe() if row is not None else f"slurm: job {ref} is gone"), problem

    def set_priority(self, job: Job, priority: int) -> None:
        """Slurm's nice becomes ``-priority`` while the attempt waits in Slurm's queue
        (on release when it is held; not once it runs). Raising a job (a negative nice)
        is for Slurm operators: for others this raises with Slurm's refusal."""
        ref = self._ref(job)
        if ref is not None:
            self.holds.set_priority(job, ref, priority)

    def sync_holds(self, jobs: Iterable[Job], store: Store, monitor: LogWatcher | None) -> None:
        """Keep loradeck's HELD in step with Slurm's holds, whoever made them (see
        :meth:`SlurmHolds.sync`). Call once per engine pass, after :meth:`refresh`."""
        self.holds.sync(jobs, store, monitor)

    def _require_ref(self, job: Job, doing: str) -> str:
        ref = self._ref(job)
        if ref is None:
            raise ExecutorError(
                f"job {job.id} is not in Slurm yet (no Slurm job id), so Slurm cannot "
                f"{doing} it; try again in a moment",
                title=f"{doing} refused",
            )
        return ref

    # ----------------------------------------------------------------- windows

    def close_window(self, job: Job) -> None:
        """Nothing to close: a Slurm job has no window."""

    def attach_command(self, job: Job) -> list[str]:
        """``tail -F`` of the job's log (there is no terminal to attach to)."""
        return ["tail", "-n", "200", "-F", str(job.log_file)]

    def adopt(self) -> dict[str, AdoptedAttempt]:
        """Every Slurm job of this home (by its ``--comment`` tag), by Slurm id."""
        found: dict[str, AdoptedAttempt] = {}
        for ref, row in self.queue.mine().items():
            tag = JobTagComment.parse(row.comment)
            if tag is None or tag.home_key != self.home_key:
                continue
            found[ref] = AdoptedAttempt(
                ref=ref, job_id=tag.job_id, attempt=tag.attempt, alive=not row.ended, name=row.name
            )
        return found

    # ----------------------------------------------------------------- helpers

    def _known_ref(self, job: Job) -> str | None:
        if job.executor_ref:
            return job.executor_ref
        info = JobFiles.of(job).attempt_info(job.attempts)
        return info.ref if info is not None and info.ref else None

    def _ref(self, job: Job) -> str | None:
        """The Slurm id of the current attempt; found by its tag if loradeck died
        between sbatch and writing it down."""
        ref = self._known_ref(job)
        if ref is not None:
            return ref
        files = JobFiles.of(job)
        info = files.attempt_info(job.attempts)
        if info is None:  # never got as far as sbatch
            return None
        tag = JobTagComment(self.home_key, job.id, job.attempts).text()
        for found, row in self.queue.mine().items():
            if row.comment == tag:
                files.write_attempt(AttemptInfo(info.attempt, info.token, found, info.launched_at))
                return found
        return None


def _latest_ref(attempt_file: Path) -> str | None:
    """The Slurm id in a job's ``attempt.json`` (its latest attempt), if any."""
    try:
        data = json.loads(attempt_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and is_job_id(ref) else None
