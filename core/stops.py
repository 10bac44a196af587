"""Stopping running attempts: each kill sequence runs in a worker thread of its own.

A kill waits out a grace period (seconds), so the engine thread only starts one here;
a later pass takes the finished ones (:meth:`StopTracker.take_finished`) and concludes
each with an :class:`~loradeck.core.outcomes.AttemptEnd` that says why it was stopped.
Thread-safe: the monitor's thread starts stops too (a diverged loss).

A part of :class:`~loradeck.core.engine.Engine`, which builds it and calls it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from loradeck.core.executor import Executor
from loradeck.core.models import Job
from loradeck.core.outcomes import AttemptEnd
from loradeck.core.settings import Settings

log = logging.getLogger(__name__)

StopReason = Literal["cancel", "timeout", "lost", "diverged", "stalled", "vram"]
"""Why the engine stops an attempt; it decides how the attempt is concluded."""


@dataclass
class _Stop:
    why: StopReason
    step: int | None = None
    no_retry: bool = False
    done: bool = False

    def end(self) -> AttemptEnd:
        """How the stopped attempt ended, as :func:`~loradeck.core.outcomes.conclude`
        reads it."""
        return AttemptEnd(
            cancelled=self.why == "cancel",
            timed_out=self.why == "timeout",
            lost=self.why == "lost",
            diverged=self.why == "diverged",
            diverged_step=self.step,
            stalled=self.why == "stalled",
            vram_exceeded=self.why == "vram",
            no_retry=self.no_retry,
        )


class StopTracker:
    """The attempts being stopped, by job id, until a pass concludes them.

    One stop per job at a time: asking again while one runs does nothing, so the
    first reason (a cancel, say, before the timeout that followed) is the one kept.
    """

    def __init__(
        self, executor: Executor, settings: Settings, *, on_done: Callable[[], None]
    ) -> None:
        self._executor = executor
        self._settings = settings
        self._on_done = on_done
        self._stops: dict[int, _Stop] = {}
        self._lock = threading.Lock()

    def stopping(self, job_id: int) -> bool:
        """Whether job ``job_id`` is being stopped (or stopped and not yet concluded)."""
        with self._lock:
            return job_id in self._stops

    def begin(
        self, job: Job, why: StopReason, *, step: int | None = None, no_retry: bool = False
    ) -> None:
        """Start killing ``job``'s attempt in a worker thread; ``on_done`` is called
        when it is over (so that a pass concludes it at once)."""
        with self._lock:
            if job.id in self._stops:
                return
            entry = _Stop(why, step=step, no_retry=no_retry)
            self._stops[job.id] = entry
        grace = self._settings.executor.kill_grace or 10.0

        def work() -> None:
            try:
                self._executor.stop(job, grace=grace)
            except Exception:
                log.exception("stopping job %s failed", job.id)
            finally:
                with self._lock:
                    entry.done = True
                self._on_done()

        threading.Thread(target=work, name=f"stop-{job.id}", daemon=True).start()

    def take_finished(self) -> list[tuple[int, AttemptEnd]]:
        """The stops whose kill sequence is over, each with how its attempt ended;
        they are forgotten here (the caller concludes them)."""
        with self._lock:
            finished = [(job_id, s) for job_id, s in self._stops.items() if s.done]
            for job_id, _ in finished:
                del self._stops[job_id]
        return [(job_id, entry.end()) for job_id, entry in finished]
