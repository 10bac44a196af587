"""Shared fixtures: every test gets its own loradeck home and config dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from slurm_fixtures import slurm_cluster, slurm_home  # noqa: F401  (the Slurm tests' fixtures)
from tmux_fixtures import (  # noqa: F401  (fixtures for the whole suite)
    kill_job_processes,
    make_tmux_job,
    tmux_exec_socket,
    tmux_executor,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the real user's loradeck state or settings."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.delenv("LORADECK_HOME", raising=False)
    monkeypatch.setenv(
        "TERM",
        os.environ.get("TERM")
        if os.environ.get("TERM") not in (None, "", "dumb")
        else "xterm-256color",
    )


def wait_for(
    predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition"
) -> object:
    """Polls ``predicate`` until it returns something truthy, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def tmux_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A private tmux server for one test, killed afterwards, with every process of
    the jobs under tmp_path (setsid escapees included)."""
    name = f"loradeck-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHELL", "/bin/sh")
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
    kill_job_processes(tmp_path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    return path


class Cli:
    """Runs the real ``loradeck`` command in a subprocess against one home."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "loradeck.core.cli", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            cwd=self.cwd,
            env=full_env,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "loradeck.core.cli", "--home", str(self.home), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
        )


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Cli:
    return Cli(home, tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# Imported last: it needs the helpers above.
from engine_helpers import harness  # noqa: E402, F401  (the in-process engine fixture)

__all__: Sequence[str] = ["REPO", "Cli", "wait_for", "write"]
