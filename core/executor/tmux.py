"""Run each job attempt in its own window of a tmux session.

The session (``loradeck`` by default, on the user's default tmux server) holds one window
per job, so ``tmux attach -t loradeck`` shows them. A window is addressed by its id
(``@12``, the executor_ref), never by name; its name, :func:`safe_window_name`, is only
for people. Window options tie a window to its job: ``@loradeck_job_id``,
``@loradeck_attempt`` and ``@loradeck_pane`` (the pane running the job), so that a
restarted engine can find its windows again (:meth:`TmuxExecutor.adopt`) and never acts
on a window that has since been reused for something else.

A launch is one tmux call for every window a scheduling pass starts
(:meth:`TmuxExecutor.launch_many`, :mod:`loradeck.core.executor.tmux_launch`), and
``attempt.json`` with the attempt's token is written before the window exists: ``run.sh``
runs nothing without it, so a launch given up on can never run late.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import (
    NO_ENV,
    AdoptedAttempt,
    AttemptResult,
    AttemptStatus,
)
from loradeck.core.executor.jobfiles import AttemptInfo, JobFiles, attempt_pids
from loradeck.core.executor.proctree import (
    SETTLE_S,
    find_tree,
    kill_tree,
    process_start,
    verified_root,
)
from loradeck.core.executor.runscript import FirstStage, RunSpec, write_run_files
from loradeck.core.executor.tmux_launch import WindowLaunch, WindowOpener
from loradeck.core.executor.tmux_server import TmuxServer
from loradeck.core.models import Job

WINDOW_NAME_MAX = 40
_UNSAFE_NAME = re.compile(r"[^\w+-]+")
_SESSION_NAME = re.compile(r"^[A-Za-z0-9_+-]{1,64}$")
_PANE_FIELDS = (
    "#{session_name}",
    "#{window_id}",
    "#{pane_id}",
    "#{pane_dead}",
    "#{pane_pid}",
    "#{pane_dead_time}",
    "#{@loradeck_job_id}",
    "#{@loradeck_attempt}",
    "#{@loradeck_pane}",
    "#{pid}",
    "#{window_name}",
)
_PANE_FORMAT = "\t".join(_PANE_FIELDS)


def safe_window_name(job_id: int, name: str) -> str:
    """``"<id>-<name>"`` with everything but letters, digits, ``_``, ``+`` and ``-``
    replaced by ``_`` (dots and colons break tmux targets, ``#`` starts tmux formats),
    at most 40 characters."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip("_")
    if not cleaned:
        return str(job_id)
    return f"{job_id}-{cleaned}"[:WINDOW_NAME_MAX].rstrip("_")


@dataclass(frozen=True)
class _Pane:
    session: str
    window_id: str
    pane_id: str
    dead: bool
    pid: int | None
    dead_time: float | None
    job_id: int | None
    attempt: int | None
    job_pane: str
    server_pid: int | None
    window_name: str

    @property
    def unreaped(self) -> bool:
        """Dead, but tmux has not collected the exit status (see ``_nudge``)."""
        return self.dead and self.dead_time is None

    @property
    def runs_a_job(self) -> bool:
        """The pane that loradeck started the job in (not one a user split off)."""
        return self.job_id is not None and self.pane_id == self.job_pane

    @classmethod
    def parse(cls, line: str) -> _Pane | None:
        parts = line.split("\t")
        if len(parts) != len(_PANE_FIELDS):
            return None
        session, window, pane, dead, pid, dead_time, job_id, attempt, job_pane, server, name = parts
        return cls(
            session=session,
            window_id=window,
            pane_id=pane,
            dead=dead == "1",
            pid=int(pid) if pid.isdigit() else None,
            dead_time=float(dead_time) if dead_time.isdigit() else None,
            job_id=int(job_id) if job_id.isdigit() else None,
            attempt=int(attempt) if attempt.isdigit() else None,
            job_pane=job_pane,
            server_pid=int(server) if server.isdigit() else None,
            window_name=name,
        )


class TmuxExecutor:
    """The :class:`~loradeck.core.executor.base.Executor` that runs jobs in tmux windows."""

    name = "tmux"

    def __init__(
        self,
        *,
        session: str = "loradeck",
        socket_name: str | None = None,
        max_log_bytes: int = 512 * 2**20,
        python: str = sys.executable,
        close_on_success: bool = False,
        tmux_bin: str | None = None,
        settle: float = SETTLE_S,
        first_stage: bool = True,
    ) -> None:
        """``session`` and ``socket_name`` (tmux -L; None for the default server) say
        where windows go; ``max_log_bytes`` bounds each log; ``python`` runs the log tee;
        ``close_on_success`` closes a window as soon as its command exits with 0;
        ``settle`` is how long :meth:`stop` waits for SIGKILLed processes to vanish;
        ``first_stage`` lets GNU ``dd`` and ``tee``, where found, copy a job's first
        output instead of the python tee (see :class:`FirstStage`)."""
        if not _SESSION_NAME.match(session):
            raise ExecutorError(
                f"tmux session name {session!r} is not usable; use letters, digits, "
                "'_', '+' and '-' (executor.tmux_session in config.toml)"
            )
        if max_log_bytes < 4096:
            raise ExecutorError(
                f"max_log_bytes must be at least 4096, got {max_log_bytes} "
                "(monitoring.max_log_mb in config.toml)"
            )
        self.session = session
        self.server = TmuxServer(socket_name, tmux_bin=tmux_bin)
        self._max_log_bytes = max_log_bytes
        self._python = python
        self._close_on_success = close_on_success
        self._settle = settle
        self._bash = shutil.which("bash") or "/bin/bash"
        self._opener = WindowOpener(
            self.server,
            session,
            bash=self._bash,
            env=shutil.which("env") or "/usr/bin/env",
            settle=settle,
        )
        self._want_first_stage = first_stage
        self._first_stage: FirstStage | None = None
        self._first_stage_known = False
        self._roots: dict[int, tuple[int, int, int]] = {}
        """job id -> (attempt, pid, start) of a runner that :meth:`poll` verified: later
        polls only check that this very process still lives (one small read)."""

    # ----------------------------------------------------------------- launch

    def launch(
        self, job: Job, gpu_ids: tuple[int, ...], *, extra_env: Mapping[str, str] = NO_ENV
    ) -> str:
        """Write the job's run files and start attempt ``job.attempts`` in a new window;
        the window id."""
        (outcome,) = self.launch_many([(job, gpu_ids)], extra_env=extra_env)
        if isinstance(outcome, ExecutorError):
            raise outcome
        return outcome

    def launch_many(
        self,
        starts: Sequence[tuple[Job, tuple[int, ...]]],
        *,
        extra_env: Mapping[str, str] = NO_ENV,
    ) -> list[str | ExecutorError]:
        """Start attempt ``job.attempts`` of each job on its GPUs, with one tmux call for
        all of them; per start, in order, its window id or the error that kept it from
        starting. A start that failed has no window and runs nothing."""
        outcomes: list[str | ExecutorError] = []
        ready: dict[int, WindowLaunch] = {}
        for index, (job, gpu_ids) in enumerate(starts):
            try:
                ready[index] = self._prepare(job, tuple(gpu_ids), extra_env)
                outcomes.append("")
            except ExecutorError as err:
                outcomes.append(err)
        for index, outcome in self._opener.open(ready).items():
            outcomes[index] = outcome
        return outcomes

    def _prepare(
        self, job: Job, gpu_ids: tuple[int, ...], extra_env: Mapping[str, str]
    ) -> WindowLaunch:
        """Write run.sh, command.sh and attempt.json (no window ref yet)."""
        attempt = job.attempts
        if attempt < 1:
            raise ExecutorError(
                f"job {job.id}: launch needs job.attempts to be the attempt being started "
                f"(1 or more), got {attempt}"
            )
        files = JobFiles.of(job)
        files.prepare(job)
        token = secrets.token_hex(16)
        spec = RunSpec(
            job=job,
            attempt=attempt,
            gpu_ids=gpu_ids,
            token=token,
            python=self._python,
            max_log_bytes=self._max_log_bytes,
            extra_env=extra_env,
            close_on_success_with=self.server.tmux_bin if self._close_on_success else None,
            first_stage=self._find_first_stage(),
            launch_guard=True,
        )
        write_run_files(spec)
        files.write_attempt(AttemptInfo(attempt, token, "", time.time()))
        return WindowLaunch(job, files, token, safe_window_name(job.id, job.name))

    def _find_first_stage(self) -> FirstStage | None:
        """Looked for once, at the first launch (it runs two small programs)."""
        if not self._first_stage_known:
            self._first_stage = FirstStage.find() if self._want_first_stage else None
            self._first_stage_known = True
        return self._first_stage

    # ----------------------------------------------------------------- watch

    def poll(self, job: Job) -> AttemptResult:
        """EXITED once ``exit_status`` of this attempt exists; RUNNING while its runner
        (or, before the runner has started, its pane) is alive; LOST otherwise."""
        files = JobFiles.of(job)
        attempt = job.attempts
        if (done := files.result(attempt)) is not None:
            self._roots.pop(job.id, None)
            return done
        known = self._roots.get(job.id)
        if known is not None and known[0] == attempt and process_start(known[1]) == known[2]:
            return AttemptResult(AttemptStatus.RUNNING)  # the root verified before lives on
        info = files.attempt_info(attempt)
        root = verified_root(files.root_pid(), info.token) if info is not None else None
        if root is not None:
            start = process_start(root.pid)
            if start is not None:
                if len(self._roots) > 100_000:  # jobs concluded elsewhere; start afresh
                    self._roots.clear()
                self._roots[job.id] = (attempt, root.pid, start)
            return AttemptResult(AttemptStatus.RUNNING)
        self._roots.pop(job.id, None)
        pane = self._job_pane(job, info)
        if pane is not None and not pane.dead:
            return AttemptResult(AttemptStatus.RUNNING)
        # It may have recorded its status between the first look and now.
        return files.result(attempt) or AttemptResult(AttemptStatus.LOST)

    def pids(self, job: Job) -> list[int]:
        """The live processes of the current attempt, escaped ones included."""
        return attempt_pids(job)

    # ----------------------------------------------------------------- stop

    def stop(self, job: Job, *, grace: float) -> None:
        """The kill sequence (SIGINT, SIGTERM, SIGKILL, ``grace`` apart) on the attempt's
        whole process tree; returns once it is gone. If the runner itself had to be
        killed, writes an exit status marked ``stopped``."""
        files = JobFiles.of(job)
        attempt = job.attempts
        info = files.attempt_info(attempt)
        token = info.token if info is not None else None
        root = files.root_pid() if token is not None else None
        if root is None:  # the runner has not written its pid yet: use the pane's process
            pane = self._job_pane(job, info)
            root = pane.pid if pane is not None and not pane.dead else None
        if token is None and root is None:
            return
        had_processes = bool(find_tree(root, token=token))
        survivors = kill_tree(
            root, grace=max(0.0, grace), token=token, spare_root=True, settle=self._settle
        )
        if survivors:
            raise ExecutorError(
                f"job {job.id}: processes {', '.join(map(str, survivors))} survived SIGKILL "
                "(stuck in the kernel, often a GPU driver call); they may still hold GPU "
                "memory",
                title="processes survived",
            )
        if had_processes and files.result(attempt) is None:
            files.record_stopped(attempt)

    # ----------------------------------------------------------------- windows

    def close_window(self, job: Job) -> None:
        """Close the job's window (any attempt); no-op when it is already gone."""
        info = JobFiles.of(job).attempt_info(job.attempts)
        pane = self._job_pane(job, info, any_attempt=True)
        if pane is not None:
            self.server.try_run("kill-window", "-t", pane.window_id)

    def close_finished_windows(self, older_than: float, *, now: float | None = None) -> list[str]:
        """Close the windows of this session whose job ended at least ``older_than``
        seconds ago; their ids. For ``executor.close_window_after``."""
        now = time.time() if now is None else now
        closed = []
        for pane in self._job_panes():
            due = pane.dead and pane.dead_time is not None and now - pane.dead_time >= older_than
            if due and self.server.try_run("kill-window", "-t", pane.window_id) is not None:
                closed.append(pane.window_id)
        return closed

    def adopt(self) -> dict[str, AdoptedAttempt]:
        """Every job window of this session, by window id, for crash recovery."""
        return {
            pane.window_id: AdoptedAttempt(
                ref=pane.window_id,
                job_id=pane.job_id or 0,
                attempt=pane.attempt or 0,
                alive=not pane.dead,
                name=pane.window_name,
            )
            for pane in self._job_panes()
        }

    def attach_command(self, job: Job) -> list[str]:
        """argv that attaches a terminal (outside tmux) to the job's window."""
        return self.server.argv("attach-session", "-t", self._target(job))

    def switch_command(self, job: Job) -> list[str]:
        """argv that switches the current tmux client to the job's window; works only
        from inside the same tmux server (see :meth:`inside_same_server`)."""
        return self.server.argv("switch-client", "-t", self._target(job))

    def inside_same_server(self, environ: Mapping[str, str] = os.environ) -> bool:
        """Whether ``environ`` (its ``TMUX``) belongs to a client of this tmux server."""
        tmux = environ.get("TMUX", "")
        if not tmux:
            return False
        folder = environ.get("TMUX_TMPDIR") or "/tmp"  # noqa: S108 - tmux's own default
        ours = Path(folder) / f"tmux-{os.getuid()}" / (self.server.socket_name or "default")
        return os.path.realpath(tmux.split(",", 1)[0]) == os.path.realpath(ours)

    # ----------------------------------------------------------------- helpers

    def _target(self, job: Job) -> str:
        ref = job.executor_ref
        if ref is None:
            info = JobFiles.of(job).attempt_info(job.attempts)
            ref = info.ref if info is not None else None
        return ref if ref else f"={self.session}:"

    def _job_pane(
        self, job: Job, info: AttemptInfo | None, *, any_attempt: bool = False
    ) -> _Pane | None:
        """The pane running ``job`` (this attempt unless ``any_attempt``), if it exists."""
        ref = job.executor_ref or (info.ref if info is not None else None)
        if ref:
            lines = self.server.try_run("list-panes", "-t", ref, "-F", _PANE_FORMAT) or []
            panes = [p for p in map(_Pane.parse, lines) if p is not None]
        else:  # launched, but the engine stopped before it stored the window id
            panes = self._job_panes()
        for pane in panes:
            if (
                pane.runs_a_job
                and pane.job_id == job.id
                and (any_attempt or pane.attempt == job.attempts)
            ):
                if pane.unreaped:
                    _nudge(pane.server_pid)
                return pane
        return None

    def _job_panes(self) -> list[_Pane]:
        panes = self._list_job_panes()
        if any(p.unreaped for p in panes):
            _nudge(panes[0].server_pid)
            panes = self._list_job_panes()
        return panes

    def _list_job_panes(self) -> list[_Pane]:
        lines = self.server.try_run("list-panes", "-a", "-F", _PANE_FORMAT) or []
        panes = (_Pane.parse(line) for line in lines)
        return [p for p in panes if p is not None and p.runs_a_job and p.session == self.session]


def _nudge(server_pid: int | None) -> None:
    """Make tmux collect the exit status of dead panes.

    tmux built with libutempter misses SIGCHLD for a pane that exits while another pane
    is being spawned (tmux issue #311): the pane shows dead but has no exit status or
    time, and with remain-on-exit off it never closes. An extra SIGCHLD makes tmux reap.
    """
    if server_pid is not None:
        with contextlib.suppress(OSError):
            os.kill(server_pid, signal.SIGCHLD)
