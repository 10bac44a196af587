"""Why each waiting job waits: a read-only mapping that works reasons out when read.

A pass over 10,000 waiting jobs looks closely at a few dozen; building 10,000 strings it
would mostly throw away is what made passes slow. :class:`PassReasons` holds the reasons
the pass wrote and computes the rest (held, dependency, backoff, or the shared reason the
scan stopped for) on access, from the pass's own immutable inputs, so reading it gives the
same answer whenever it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from loradeck.core.models import Job, JobState

_WAITING = frozenset({JobState.PENDING, JobState.HELD})


class PassReasons(Mapping[int, str]):
    """Pending or held job id -> why it did not start this pass."""

    __slots__ = ("_explicit", "_fallback", "_jobs", "_lookup", "_started")

    def __init__(
        self,
        explicit: Mapping[int, str],
        jobs: Iterable[Job],
        lookup: Callable[[int], Job | None],
        started: frozenset[int],
        fallback: Callable[[Job], str],
    ) -> None:
        self._explicit = explicit
        self._jobs = jobs
        self._lookup = lookup
        self._started = started
        self._fallback = fallback

    def __getitem__(self, job_id: int) -> str:
        found = self._explicit.get(job_id)
        if found is not None:
            return found
        job = self._lookup(job_id)
        if job is None or job.state not in _WAITING or job_id in self._started:
            raise KeyError(job_id)
        return self._fallback(job)

    def __iter__(self) -> Iterator[int]:
        started = self._started
        for job in self._jobs:
            if job.state in _WAITING and job.id not in started:
                yield job.id

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, int):
            return False
        job = self._lookup(job_id)
        return job is not None and job.state in _WAITING and job_id not in self._started

    def __repr__(self) -> str:
        return f"PassReasons({dict(self.items())!r})"
