"""The files an executor keeps in a job's own folder (``job.job_dir``, the folder of its
log), and reading them. The job's ``output_dir`` (which several jobs may share) gets none.

=================  ==============================================================
``run.sh``         generated runner (see :mod:`loradeck.core.executor.runscript`)
``command.sh``     the job's command, verbatim; only ``bash command.sh`` reads it
``attempt.json``   written at launch: attempt number, run token, executor handle
                   (empty for tmux, whose windows carry the job in options)
``pid``            written by ``run.sh`` when it starts: its own pid (the process
                   group leader of the attempt)
``exit_status``    written by ``run.sh`` when the command ends, atomically (temp
                   file + ``mv``): ``{"attempt": 2, "exit_code": 3, "signal": null,
                   "ended_at": 1700000000.1, "log_status": 0}``; ``log_status``
                   is the tee's exit status, -1 if a process the command left
                   behind still holds the log open; :meth:`JobFiles.record_stopped`
                   writes one with ``"stopped": true`` when the runner was killed
``launch_error``   written when the environment or workdir could not be entered
``.tee_next``      the byte the tee's first stage read ahead (see ``runscript``)
=================  ==============================================================

A launch moves the previous attempt's ``exit_status`` to ``exit_status.<attempt>`` and its
log to ``<log>.<attempt>`` and creates the new, empty log; every reader checks the attempt
number, so an old attempt's status is never taken for the current one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import AttemptResult, AttemptStatus
from loradeck.core.models import Job


@dataclass(frozen=True)
class AttemptInfo:
    """What ``attempt.json`` records about the attempt started last."""

    attempt: int
    token: str
    """A random value exported as ``LORADECK_RUN_TOKEN``; every process of the attempt
    inherits it, which is how processes that left the process group are found."""
    ref: str
    launched_at: float


@dataclass(frozen=True)
class JobFiles:
    """Paths of the executor's files for one job."""

    folder: Path

    @classmethod
    def of(cls, job: Job) -> JobFiles:
        return cls(Path(job.job_dir))

    @property
    def run_script(self) -> Path:
        return self.folder / "run.sh"

    @property
    def command_script(self) -> Path:
        return self.folder / "command.sh"

    @property
    def attempt_file(self) -> Path:
        return self.folder / "attempt.json"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    @property
    def exit_status(self) -> Path:
        return self.folder / "exit_status"

    @property
    def launch_error(self) -> Path:
        return self.folder / "launch_error"

    # ----------------------------------------------------------------- launch side

    def prepare(self, job: Job) -> None:
        """Create the job folder and output_dir (0700 when new) and set aside what a
        previous attempt left."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            Path(job.output_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.exit_status.exists():
                try:
                    old = (_read_json(self.exit_status) or {}).get("attempt")
                except ExecutorError:
                    old = None
                suffix = str(old) if isinstance(old, int) else "old"
                os.replace(self.exit_status, self.folder / f"exit_status.{suffix}")
            for stale in (self.pid_file, self.launch_error, self.attempt_file):
                stale.unlink(missing_ok=True)
            log = Path(job.log_file)
            if log.exists() and job.attempts > 1:
                os.replace(log, log.with_name(f"{log.name}.{job.attempts - 1}"))
            # The log exists from launch on, so that followers never see it missing.
            os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        except OSError as err:
            raise ExecutorError(
                f"job {job.id}: cannot prepare its folder {self.folder}: {err}; "
                "check that the output_dir is writable"
            ) from err

    def write_attempt(self, info: AttemptInfo) -> None:
        data = {
            "attempt": info.attempt,
            "token": info.token,
            "ref": info.ref,
            "launched_at": info.launched_at,
        }
        write_atomic(self.attempt_file, json.dumps(data) + "\n")

    # ----------------------------------------------------------------- readers

    def attempt_info(self, attempt: int) -> AttemptInfo | None:
        """``attempt.json`` if it belongs to ``attempt``."""
        data = _read_json(self.attempt_file)
        if data is None or data.get("attempt") != attempt:
            return None
        try:
            return AttemptInfo(
                attempt=int(data["attempt"]),
                token=str(data["token"]),
                ref=str(data.get("ref", "")),
                launched_at=float(data.get("launched_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def root_pid(self) -> int | None:
        """The pid ``run.sh`` recorded, if it has started."""
        try:
            text = self.pid_file.read_text(encoding="ascii").strip()
            return int(text) if text else None
        except (OSError, ValueError, UnicodeDecodeError):
            return None

    def result(self, attempt: int) -> AttemptResult | None:
        """The recorded end of ``attempt``, or None while it has none."""
        data = _read_json(self.exit_status)
        if data is None or data.get("attempt") != attempt:
            return None
        error: str | None = None
        if self.launch_error.exists():
            try:
                error = self.launch_error.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                error = "the job's environment could not be set up (see its log)"
        return AttemptResult(
            status=AttemptStatus.EXITED,
            exit_code=_opt_int(data.get("exit_code")),
            signal=_opt_int(data.get("signal")),
            ended_at=_opt_float(data.get("ended_at")),
            launch_error=error or None,
            stopped=bool(data.get("stopped", False)),
        )

    def record_stopped(self, attempt: int) -> None:
        """Write an exit status for an attempt whose runner was killed before writing one
        (how its command ended is unknown)."""
        data: dict[str, Any] = {
            "attempt": attempt,
            "exit_code": None,
            "signal": None,
            "ended_at": time.time(),
            "stopped": True,
        }
        write_atomic(self.exit_status, json.dumps(data) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ExecutorError(f"cannot write {path}: {err}") from err


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ExecutorError(f"cannot read {path}: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # Writers rename complete files into place, so this is damage, not a race.
        raise ExecutorError(
            f"{path} is not valid JSON ({err}); delete it to treat the attempt as lost"
        ) from err
    return data if isinstance(data, dict) else None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def attempt_pids(job: Job) -> list[int]:
    """The live processes of ``job``'s current attempt on this machine: the process tree
    of its ``run.sh`` and every process carrying the attempt's token (escaped ones too)."""
    from loradeck.core.executor.proctree import find_tree

    files = JobFiles.of(job)
    info = files.attempt_info(job.attempts)
    if info is None:
        return []
    return [p.pid for p in find_tree(files.root_pid(), token=info.token)]
