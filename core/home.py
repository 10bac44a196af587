"""A loradeck home: the folder that holds one queue's state, logs and job folders.

Layout::

    <home>/store/          the durable store (see loradeck.core.store)
    <home>/jobs/<id>/      one folder per job: run script, log, exit status, config copy
    <home>/events.jsonl    every engine event, one JSON object a line
    <home>/engine.lock     the engine lease (whoever holds it runs the scheduler)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from loradeck.core.errors import StoreError

APP_NAME = "loradeck"
HOME_ENV = "LORADECK_HOME"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--home DIR``, else ``$LORADECK_HOME``, else the platform's user state dir."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_state_dir(APP_NAME)).absolute()


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700, whatever the umask."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_mode & 0o777 != 0o700:
            path.chmod(0o700)
    except OSError as err:
        raise StoreError(
            f"{path}: cannot create the folder ({err.strerror}); "
            "choose another place with --home or $LORADECK_HOME"
        ) from err
    return path


@dataclass(frozen=True)
class Home:
    """Paths inside one home. Creating a Home creates its folder (0700)."""

    root: Path

    @classmethod
    def open(cls, explicit: str | os.PathLike[str] | None = None) -> Home:
        root = ensure_private_dir(resolve_home(explicit))
        return cls(root)

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def engine_lock(self) -> Path:
        return self.root / "engine.lock"
