"""A loradeck home: the folder that holds one queue's state, logs and job folders.

Layout::

    <home>/store/          the durable store (see loradeck.core.store)
    <home>/jobs/<id>/      one folder per job: run script, log, exit status, config copy
    <home>/events.jsonl    every engine event, one JSON object a line
    <home>/engine.lock     the engine lease (whoever holds it runs the scheduler)

With Slurm and ``slurm.shared_root`` set, job folders live where the compute nodes see
them too: ``<shared_root>/loradeck-<home key>/jobs/<id>/`` (the key tells homes apart),
unless the home itself is on the shared root.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
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
    """Paths inside one home. :meth:`open` creates its folder (0700)."""

    root: Path
    shared_root: Path | None = None
    """Slurm's ``shared_root``: job folders go under it (see :attr:`jobs_dir`)."""

    @classmethod
    def open(
        cls, explicit: str | os.PathLike[str] | None = None, *, shared_root: Path | None = None
    ) -> Home:
        """The home (``--home``, ``$LORADECK_HOME`` or the default), created if needed;
        ``shared_root`` in Slurm mode (nothing is created there until a job is)."""
        root = ensure_private_dir(resolve_home(explicit))
        return cls(root, shared_root.expanduser().absolute() if shared_root else None)

    @property
    def key(self) -> str:
        """A short, stable id of this home (its path hashed): it tells apart homes that
        share a Slurm root or cluster (Slurm jobs carry it in their ``--comment``)."""
        return hashlib.sha256(str(self.root.absolute()).encode()).hexdigest()[:12]

    @cached_property
    def jobs_dir(self) -> Path:
        """Where job folders go: ``<home>/jobs``, or, with a shared root the home is not
        on, ``<shared_root>/loradeck-<key>/jobs`` (so compute nodes can write the logs)."""
        shared = self.shared_root
        if shared is None or self.root.resolve().is_relative_to(shared.resolve()):
            return self.root / "jobs"
        return shared / f"loradeck-{self.key}" / "jobs"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def engine_lock(self) -> Path:
        return self.root / "engine.lock"
