"""The one error hierarchy of loradeck.

Every error carries a short ``title`` and a ``message`` that says what went wrong,
where, and how to fix it. The CLI prints ``title: message`` to stderr and exits
with ``exit_code``; the TUI shows the same text in a notification.
"""

from __future__ import annotations


class LoradeckError(Exception):
    """Base class of every error loradeck raises on purpose."""

    title: str = "error"
    exit_code: int = 2

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return f"{self.title}: {self.message}"


class ValidationError(LoradeckError):
    """A batch file, settings file or command line that does not validate.

    ``problems`` holds one line per problem, each naming file, job and field.
    """

    title = "invalid input"

    def __init__(self, problems: list[str] | str, *, title: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems), title=title)


class UnknownJobError(LoradeckError):
    """A job id or name that the store does not know."""

    title = "unknown job"


class IllegalTransitionError(LoradeckError):
    """A state change the job state machine does not allow."""

    title = "illegal transition"


class StoreError(LoradeckError):
    """The durable store cannot be read or written."""

    title = "store error"


class StoreCorruptError(StoreError):
    """A store file that does not parse. It is never reset silently."""

    title = "corrupt store"


class SettingsError(ValidationError):
    """A settings file (config.toml) that does not validate."""

    title = "invalid settings"


class GpuError(LoradeckError):
    """GPU inventory problems (no NVML, a GPU index that does not exist)."""

    title = "gpu error"


class ExecutorError(LoradeckError):
    """The executor (tmux, Slurm) failed to start, stop or query a job."""

    title = "executor error"


class EngineLockedError(LoradeckError):
    """Another process holds the engine lease for this home."""

    title = "engine busy"
