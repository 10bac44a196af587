"""The console entry: ``loradeck`` with no command opens the TUI on a terminal, any
command (or no terminal) goes to the CLI."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

from loradeck.tui.main import wants_tui


def test_only_a_bare_command_line_on_a_terminal_opens_the_tui() -> None:
    assert wants_tui([], interactive=True)
    assert wants_tui(["--home", "h", "--gpus", "sim:2"], interactive=True)
    assert wants_tui(["demo"], interactive=True)
    assert not wants_tui([], interactive=False)
    assert not wants_tui(["demo", "--headless"], interactive=True)
    assert not wants_tui(["list"], interactive=True)
    assert not wants_tui(["--run-batch", "b.toml"], interactive=True)
    assert not wants_tui(["--help"], interactive=True)
    assert not wants_tui(["--no-such-option"], interactive=True)


def test_without_a_terminal_the_cli_answers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loradeck.tui.main", "--home", str(tmp_path / "h"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no jobs" in done.stdout


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} on the terminal; got {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _open_quit_in_a_pty(home: Path, extra: list[str], env: dict[str, str], shown: bytes) -> None:
    """Start bare ``loradeck`` (plus ``extra`` options) on a 120x40 pseudo-terminal, wait
    for ``shown`` on screen, press q and expect a clean exit."""
    socket = f"loradeck-entry-{uuid.uuid4().hex[:8]}"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    argv = [sys.executable, "-m", "loradeck.tui.main", "--home", str(home), *extra]
    argv += ["--gpus", "sim:2", "--tmux-socket", socket]
    env = {**env, "TERM": "xterm-256color", "SHELL": "/bin/sh"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        _read_until(master, shown, 60)
        os.write(master, b"q")
        tail = _read_until(master, b"running jobs keep running", 60)
        assert proc.wait(30) == 0, tail[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


@pytest.mark.slow
def test_the_bare_command_opens_the_tui_and_q_quits(tmp_path: Path) -> None:
    _open_quit_in_a_pty(tmp_path / "h", [], dict(os.environ), b"engine: running in this window")


@pytest.mark.slow
def test_the_theme_setting_reaches_the_tui(tmp_path: Path) -> None:
    """``[tui] theme`` in the settings file is the theme asked for at start: an unknown
    one is named on screen (and the default used)."""
    config = tmp_path / "config.toml"
    config.write_text('[tui]\ntheme = "no-such-theme"\n')
    env = {k: v for k, v in os.environ.items() if k != "LORADECK_THEME"}
    _open_quit_in_a_pty(tmp_path / "h", ["--config", str(config)], env, b"no-such-theme")
