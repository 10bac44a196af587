"""How attach reaches the terminal: tmux commands run in the foreground or in the
background. Tests give the app a recorder instead, to see what would run."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from textual.app import App


class Terminal(Protocol):
    """Runs tmux commands for attach; tests replace it to see what would run."""

    def hand_over(
        self, app: App[Any], argv: Sequence[str], env: Mapping[str, str] | None
    ) -> int: ...
    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int: ...


class SystemTerminal:
    """The real terminal: suspend the app while an attached tmux client runs."""

    def hand_over(self, app: App[Any], argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        with app.suspend():
            return subprocess.call(list(argv), env=dict(env) if env is not None else None)

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        done = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode
