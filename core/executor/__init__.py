"""Executors: how job attempts run (tmux windows here; Slurm elsewhere) and are stopped."""

from loradeck.core.executor.base import (
    NO_ENV,
    AdoptedAttempt,
    AttemptResult,
    AttemptStatus,
    BatchLauncher,
    Executor,
    launch_all,
)
from loradeck.core.executor.jobfiles import JobFiles
from loradeck.core.executor.proctree import JobTag, find_tree, job_tag, kill_tree
from loradeck.core.executor.tmux import TmuxExecutor, safe_window_name

__all__ = [
    "NO_ENV",
    "AdoptedAttempt",
    "AttemptResult",
    "AttemptStatus",
    "BatchLauncher",
    "Executor",
    "JobFiles",
    "JobTag",
    "TmuxExecutor",
    "find_tree",
    "job_tag",
    "kill_tree",
    "launch_all",
    "safe_window_name",
]
