"""Handing the queue to a headless engine when the TUI that hosts the engine quits.

``loradeck serve`` is started for the same home in a window of the jobs' tmux session
(so it outlives the terminal), and this waits until it holds the engine lease.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from loradeck.core.home import Home
from loradeck.core.lease import holder_info

#: The tmux window a headless engine is handed the queue in, on quit.
HANDOFF_WINDOW = "loradeck-engine"
#: Environment variables the headless engine must see as this process does.
PASSED_ENV = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "LORADECK_HOME", "PYTHONPATH")


def hand_off_engine(
    home: Home,
    *,
    gpus_spec: str,
    tmux_session: str,
    tmux_socket: str | None,
    config_path: Path | None,
    timeout: float = 15.0,
) -> str:
    """Start ``loradeck serve`` for ``home`` in a tmux window and wait until it holds the
    engine lease (call after releasing it). Returns what happened, in words."""
    from loradeck.core.executor.tmux_server import TmuxServer

    argv = [sys.executable, "-m", "loradeck.core.cli", "--home", str(home.root)]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    argv += ["--gpus", gpus_spec, "--tmux-session", tmux_session]
    if tmux_socket:
        argv += ["--tmux-socket", tmux_socket]
    argv.append("serve")
    env_args: list[str] = []
    for key in PASSED_ENV:
        if os.environ.get(key):
            env_args += ["-e", f"{key}={os.environ[key]}"]
    server = TmuxServer(tmux_socket)
    window = ["-d", "-P", "-F", "#{window_id}", "-n", HANDOFF_WINDOW, *env_args, *argv]
    out = server.try_run("new-window", "-t", f"={tmux_session}:", *window)
    if out is None:  # no server or no session yet
        out = server.run("new-session", "-s", tmux_session, *window)
    if out:
        # keep the window if serve fails at once, so that its message can be read
        server.try_run("set-option", "-w", "-t", out[0], "remain-on-exit", "on")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = holder_info(home.engine_lock)
        if info and info.get("pid") not in (None, os.getpid()):
            return f"engine handed to tmux window {HANDOFF_WINDOW} (pid {info['pid']})"
        time.sleep(0.1)
    return (
        f"started the engine in tmux window {HANDOFF_WINDOW}, but it has not taken the "
        f"queue yet; look at that window (tmux session {tmux_session})"
    )
