"""EASY backfill, as Slurm's backfill guarantees it for the first waiting job.

The first GPU job in policy order that cannot start gets a *reservation*: the earliest time
``T`` at which it fits, assuming every running job ends at its expected end (start + its
timeout, else its estimate: see :func:`.history.bound_seconds`), and the GPUs it would get
then. A later job may start now only if it does not delay that reservation: it ends by
``T`` (by its own timeout or estimate), or what it holds past ``T`` still leaves the
reserved GPUs able to take the reserved job (and a ``max_concurrent_jobs`` slot free).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

from loradeck.core.scheduler.model import Need
from loradeck.core.scheduler.placement import Board

_EPS = 1e-6


class Release(NamedTuple):
    """A running job as backfill sees it: what it holds, until when."""

    end: float
    job_id: int
    need: Need
    positions: tuple[int, ...]


class Reservation:
    """The reserved job, its GPUs and start, and the board as it will be at that start.

    Mutable while its pass runs: every job that starts after it and still runs at ``start``
    is added to ``board_at_start``.
    """

    def __init__(
        self,
        job_id: int,
        need: Need,
        positions: tuple[int, ...],
        start: float,
        board_at_start: Board,
        active_at_start: int,
        max_concurrent: int,
    ) -> None:
        self.job_id = job_id
        self.need = need
        self.positions = positions
        self.avoid = frozenset(positions)
        self.start = start
        self.board_at_start = board_at_start
        self.active_at_start = active_at_start
        self.max_concurrent = max_concurrent

    def admits(self, job_id: int, need: Need, positions: tuple[int, ...], end: float) -> bool:
        """Whether a job on ``positions`` until ``end`` leaves the reservation intact; if so
        it is counted in (so the next candidate sees it)."""
        if end <= self.start + _EPS:
            return True
        if self.max_concurrent and self.active_at_start + 1 >= self.max_concurrent:
            return False
        board = self.board_at_start
        board.add(job_id, need, positions)
        if self.avoid.isdisjoint(positions) or board.fits_on(self.need, self.positions):
            self.active_at_start += 1
            return True
        board.remove(job_id, need, positions)
        return False


def find_reservation(
    job_id: int,
    need: Need,
    board: Board,
    releases: Sequence[Release],
    *,
    now: float,
    active: int,
    max_concurrent: int,
) -> Reservation | None:
    """When and where ``need`` fits as running jobs end, or None if it never does (other
    processes' memory, which nobody can predict, is then what holds it)."""
    future = board.copy()
    ordered = sorted(releases, key=lambda r: (r.end, r.job_id))
    for end, group in itertools.groupby(ordered, key=lambda r: r.end):
        for release in group:
            future.remove(release.job_id, release.need, release.positions)
            active -= 1
        if max_concurrent and active >= max_concurrent:
            continue
        positions = future.place(need)
        if positions is not None:
            return Reservation(
                job_id, need, positions, max(end, now), future, active, max_concurrent
            )
    return None
