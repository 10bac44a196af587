"""What every ``loradeck`` command shares: exit codes, the argument parser's error
style, and the command context (settings, home, store, Slurm control)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from loradeck.core.actions import SlurmControl
from loradeck.core.home import Home
from loradeck.core.settings import Settings, load_settings
from loradeck.core.store import Store

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with our message style on bad arguments."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"loradeck: {message}\n")


class Context:
    """What every command needs: settings, the home and (lazily) the store."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        settings = load_settings(Path(args.config) if args.config else None)
        if getattr(args, "executor", None):
            kind = settings.executor.model_copy(update={"kind": args.executor})
            settings = settings.model_copy(update={"executor": kind})
        self.settings: Settings = settings
        slurm = settings.executor.kind == "slurm"
        # In Slurm mode job folders go on the shared root, where compute nodes see them.
        self.home = Home.open(args.home, shared_root=settings.slurm.shared_root if slurm else None)
        self._store: Store | None = None
        self._slurm: SlurmControl | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.home.root)
        return self._store

    @property
    def slurm(self) -> SlurmControl | None:
        """The Slurm executor in Slurm mode (for hold, release and priority of jobs
        handed to Slurm), else None. Nothing asks Slurm until a job needs it."""
        if self.settings.executor.kind != "slurm":
            return None
        if self._slurm is None:
            from loradeck.core.executor.slurm import SlurmExecutor

            self._slurm = SlurmExecutor(self.settings.slurm, home=self.home)
        return self._slurm

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
