"""User hooks: ``[hooks] on_job_failed = "notify-send ..."`` run on engine events.

A hook is a bash command line (the user's own, from their settings) run with the event's
fields in environment variables (LORADECK_EVENT, LORADECK_JOB_ID, LORADECK_JOB_NAME,
LORADECK_REASON, ...), never substituted into the command text. Hooks run in a worker
thread with a timeout, so they never block the engine; a failing hook is logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable

from loradeck.core.events import Event, event_fields
from loradeck.core.settings import HookSettings

log = logging.getLogger(__name__)


class HookRunner:
    """Subscribe :meth:`__call__` to the bus; it starts hooks in the background."""

    def __init__(
        self,
        settings: HookSettings,
        *,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_error = on_error
        self._threads: list[threading.Thread] = []
        self._commands: dict[str, str | None] = {}

    def command_for(self, event: Event) -> str | None:
        # Called for every event (tens a second): look the field up once per kind; a
        # missing attribute on a pydantic model is slow to find out about.
        try:
            return self._commands[event.kind]
        except KeyError:
            value = getattr(self.settings, f"on_{event.kind}", None)
            command = value if isinstance(value, str) and value.strip() else None
            self._commands[event.kind] = command
            return command

    def __call__(self, event: Event) -> None:
        command = self.command_for(event)
        if command is None:
            return
        thread = threading.Thread(
            target=self._run, args=(command, event), name=f"hook-{event.kind}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _run(self, command: str, event: Event) -> None:
        env = {**os.environ, **event_fields(event)}
        timeout = self.settings.timeout or 30.0
        try:
            result = subprocess.run(
                ["bash", "-c", command],
                env=env,
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self._report(f"hook on_{event.kind} ran past {timeout:.0f} s and was stopped")
            return
        except OSError as err:
            self._report(f"hook on_{event.kind} could not start: {err}")
            return
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            self._report(f"hook on_{event.kind} exited {result.returncode}: {tail[0]}")

    def _report(self, message: str) -> None:
        log.warning(message)
        if self.on_error is not None:
            self.on_error(message)

    def join(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)
