"""A thin, typed client of one tmux server: run a tmux command, get its output lines.

The executor talks to tmux through plain ``tmux`` commands (argv, never a shell) rather
than libtmux's object model, for three reasons: every call has a timeout (a wedged tmux
server must not hang the engine's workers); the environment a new server starts with is
cleaned of loradeck's own virtual environment (jobs inherit the server's environment);
and a launch needs exactly one tmux call (for all the jobs a pass starts), where the
object model makes several queries per window.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from loradeck.core.errors import ExecutorError

#: tmux's words for "the server or the target is not there".
_GONE = (
    "no server running",
    "error connecting to",
    "server exited unexpectedly",
    "can't find",
    "no such session",
    "no current",
    "session not found",
    "window not found",
    "pane not found",
)


class TmuxGoneError(ExecutorError):
    """The tmux server, session, window or pane a command named is not there."""

    title = "tmux target gone"


class TmuxServer:
    """One tmux server: the user's default one, or a private one by socket name (-L)."""

    def __init__(
        self,
        socket_name: str | None = None,
        *,
        tmux_bin: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        found = tmux_bin or shutil.which("tmux")
        if found is None:
            raise ExecutorError(
                "tmux is not installed or not on PATH; install it (apt install tmux, "
                "brew install tmux) or choose the slurm executor",
                title="tmux missing",
            )
        self.tmux_bin = found
        self.socket_name = socket_name
        self.timeout = timeout

    def argv(self, *args: str) -> list[str]:
        """The full command line for a tmux command on this server."""
        socket = ["-L", self.socket_name] if self.socket_name else []
        return [self.tmux_bin, *socket, *args]

    def run(self, *args: str) -> list[str]:
        """Run one tmux command (or several joined by ``";"``); its stdout lines.

        Raises :class:`TmuxGoneError` when the server or target does not exist, and
        :class:`ExecutorError` for any other failure.
        """
        lines, error = self.run_partial(*args)
        if error is not None:
            raise error
        return lines

    def run_partial(self, *args: str) -> tuple[list[str], ExecutorError | None]:
        """Run commands joined by ``";"``: the stdout lines of those that ran, and the
        error (:class:`TmuxGoneError` or :class:`ExecutorError`) that stopped the rest,
        if one did. tmux runs a list until a command fails, so the lines say how far it
        got. Raises :class:`ExecutorError` when tmux cannot be run or does not answer."""
        for arg in args:
            # tmux ends a command at an argument that ends in ";", whatever came before.
            if arg != ";" and arg.endswith(";"):
                raise ExecutorError(f"refusing to pass {arg!r} to tmux: it ends in ';'")
        argv = self.argv(*args)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.timeout,
                env=server_environment(os.environ),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ExecutorError(
                f"tmux did not answer within {self.timeout:g}s ({args[0]}); "
                "the tmux server may be stuck"
            ) from err
        except OSError as err:
            raise ExecutorError(f"cannot run {self.tmux_bin}: {err}") from err
        out = done.stdout.decode("utf-8", "replace")
        lines = [line for line in out.split("\n") if line]
        if done.returncode == 0:
            return lines, None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        text = f"tmux {args[0]} failed: {stderr or f'exit status {done.returncode}'}"
        if any(word in stderr.lower() for word in _GONE):
            return lines, TmuxGoneError(text)
        return lines, ExecutorError(text)

    def try_run(self, *args: str) -> list[str] | None:
        """Like :meth:`run`, but None when the server or target is gone."""
        try:
            return self.run(*args)
        except TmuxGoneError:
            return None

    def is_alive(self) -> bool:
        """Whether the server is running."""
        return self.try_run("list-sessions", "-F", "#{session_id}") is not None

    def kill(self) -> None:
        """Kill the server (and with it every pane); no-op when it is not running."""
        self.try_run("kill-server")


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for tmux client commands, hence for a server they start.

    A new server copies it as the global environment of every pane, so loradeck's own
    virtual environment (if it runs from one) is taken out: a job must find the python
    of its own venv, not loradeck's. TMUX and TMUX_PANE of an outer tmux are dropped too.
    """
    env = {k: v for k, v in environ.items() if k not in ("TMUX", "TMUX_PANE")}
    own_venv = sys.prefix if sys.prefix != sys.base_prefix else None
    if own_venv is not None and env.get("VIRTUAL_ENV") == own_venv:
        env.pop("VIRTUAL_ENV", None)
        env.pop("VIRTUAL_ENV_PROMPT", None)
        own_bin = os.path.join(own_venv, "bin")
        parts = env.get("PATH", "").split(os.pathsep)
        env["PATH"] = os.pathsep.join(p for p in parts if p.rstrip("/") != own_bin)
    if not env.get("TERM"):
        env["TERM"] = "xterm-256color"  # tmux refuses to start a server without one
    return env
