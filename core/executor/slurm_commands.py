"""Running Slurm's client commands (sbatch, squeue, scontrol, scancel, sacct, sinfo).

Every call has a deadline: Slurm's commands wait for ``MessageTimeout`` (10 s by default)
and retry when slurmctld is down, so an unbounded call would freeze the engine. A failure
becomes an :class:`~loradeck.core.errors.ExecutorError` whose message carries Slurm's own
words (``sbatch: error: Batch job submission failed: Invalid partition name specified``).

Where the commands live is injectable (``bin_dir``), as is a prefix that runs them
elsewhere (``("ssh", "login1")``) and extra environment (``SLURM_CONF`` for a second
cluster), so tests and unusual sites need no changes to the executor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from loradeck.core.errors import ExecutorError

#: The client commands loradeck uses.
PROGRAMS = ("sbatch", "squeue", "scontrol", "scancel", "sacct", "sinfo")

_NO_ENV: Mapping[str, str] = MappingProxyType({})


class SlurmCommandError(ExecutorError):
    """A Slurm command ran and failed; ``stderr`` is what it said."""

    title = "slurm error"

    def __init__(self, message: str, *, program: str, stderr: str, returncode: int) -> None:
        super().__init__(message)
        self.program = program
        self.stderr = stderr
        self.returncode = returncode


@dataclass(frozen=True)
class SlurmCommands:
    """How to run Slurm's client commands."""

    bin_dir: Path | None = None
    """The folder of sbatch, squeue...; found on PATH when None."""
    prefix: tuple[str, ...] = ()
    """argv put before every command (``("ssh", "login1")``); the commands are then not
    looked up here."""
    env: Mapping[str, str] = field(default_factory=lambda: _NO_ENV)
    """Extra environment variables for every command (``SLURM_CONF``)."""
    timeout: float = 30.0
    """Seconds a command may take before it counts as Slurm not answering."""

    def program(self, name: str) -> str:
        """The path (or, with a prefix, the name) to run for ``name``; raises
        :class:`ExecutorError` when it is not installed."""
        if self.prefix:
            return name if self.bin_dir is None else str(self.bin_dir / name)
        if self.bin_dir is not None:
            path = self.bin_dir / name
            if os.access(path, os.X_OK):
                return str(path)
            found = None
        else:
            found = shutil.which(name)
        if found is None:
            where = f"in {self.bin_dir}" if self.bin_dir is not None else "on PATH"
            raise ExecutorError(
                f"{name} is not installed or not {where}; the slurm executor needs Slurm's "
                "client commands (Debian/Ubuntu: apt install slurm-client; on a cluster, "
                "run loradeck on a login node), or set executor.kind = 'tmux'",
                title="slurm missing",
            )
        return found

    def argv(self, name: str, *args: str) -> list[str]:
        """The full command line for ``name args...``."""
        return [*self.prefix, self.program(name), *args]

    def run(
        self,
        name: str,
        *args: str,
        timeout: float | None = None,
        quiet_errors: Sequence[str] = (),
    ) -> str:
        """Run ``name args...``; its stdout.

        A failure whose stderr contains one of ``quiet_errors`` returns "" instead of
        raising (``"Invalid job id specified"`` for a job Slurm has forgotten)."""
        argv = self.argv(name, *args)
        env = {**os.environ, **self.env} if self.env else None
        limit = self.timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ExecutorError(
                f"`{_shown(name, args)}` did not answer within {limit:g} s; slurmctld may "
                "be down or overloaded (check with `scontrol ping`)",
                title="slurm not answering",
            ) from err
        except OSError as err:
            raise ExecutorError(
                f"cannot run {argv[0]}: {err.strerror or err}", title="slurm missing"
            ) from err
        if done.returncode != 0:
            stderr = done.stderr.strip()
            if any(text in stderr for text in quiet_errors):
                return ""
            said = stderr or done.stdout.strip() or f"exit status {done.returncode}"
            raise SlurmCommandError(
                f"`{_shown(name, args)}` failed: {said}",
                program=name,
                stderr=stderr,
                returncode=done.returncode,
            )
        return done.stdout


def _shown(name: str, args: Sequence[str], limit: int = 160) -> str:
    """The command as people read it, shortened (a long id list says little)."""
    text = " ".join([name, *args])
    return text if len(text) <= limit else text[: limit - 1] + "…"
