"""The order in which waiting jobs are considered, per ``scheduler.strategy``.

Every policy is resource-aware through the pass that consumes this order (placement and
backfill); here is only *who comes first*. Ties always go to the lower job id (submission
order), so an order is a pure function of its inputs.

- ``fifo``: submission order.
- ``priority``: highest effective priority first, where
  ``effective = priority + aging_per_hour * hours waited`` (so nothing starves). For one
  aging rate this ranks like ``priority - rate * created_at``, which does not move with the
  clock, so the key is computed without ``now``.
- ``fair_share``: highest fair-share factor first (see :mod:`.fairshare`; per user and
  project), then effective priority.
- ``sjf``: shortest expected runtime first (est_minutes, else the history median, else
  ``default_est_minutes``).

To stay fast on long queues, a job's key has a *static* part that depends only on the job
and the settings (so a :class:`~.queue.QueueIndex` can keep it sorted between passes) and a
*group* whose offset is computed once per pass: jobs of one fair-share user and project
share their factor, jobs without ``est_minutes`` and with the same history keys share their
expected runtime. A pass merges the sorted groups lazily, by ``(base, key + shift, id)``.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from loradeck.core.models import Job
from loradeck.core.scheduler.fairshare import FairShareUsage
from loradeck.core.scheduler.history import RuntimeHistory, history_keys
from loradeck.core.settings import SchedulerSettings

#: ``(static key, job id, job)``; ids are unique, so entries never compare their jobs.
Entry = tuple[float, int, Job]
Group = Hashable
ALL: Group = ("all",)
"""The one group of the fifo and priority policies."""
_EST = ("est",)


def effective_priority(job: Job, now: float, settings: SchedulerSettings) -> float:
    """``priority + aging_per_hour * hours waited`` (what the priority policy ranks by)."""
    waited_h = max(now - job.created_at, 0.0) / 3600.0
    return job.spec.priority + settings.aging_per_hour * waited_h


def order_fingerprint(settings: SchedulerSettings) -> tuple[str, float]:
    """What static keys depend on: an index built for another fingerprint is not used."""
    return (settings.strategy, settings.aging_per_hour)


def static_key(job: Job, strategy: str, rate_per_s: float) -> tuple[Group, float]:
    """A job's group and static key under ``strategy`` (see module)."""
    spec = job.spec
    if strategy == "fifo":
        return ALL, float(job.id)
    if strategy == "priority":
        return ALL, rate_per_s * job.created_at - spec.priority
    if strategy == "fair_share":
        return ("fs", spec.user or "", spec.project), rate_per_s * job.created_at - spec.priority
    if strategy == "sjf":
        if spec.est_minutes is not None:
            return _EST, spec.est_minutes * 60.0
        return ("hist", *history_keys(spec)), 0.0
    raise ValueError(f"unknown scheduler.strategy {strategy!r}")


def ordered(
    groups: Mapping[Group, Sequence[Entry]],
    settings: SchedulerSettings,
    *,
    now: float,
    usage: FairShareUsage,
    history: RuntimeHistory,
) -> Iterator[tuple[Any, ...]]:
    """The policy's order, lazily: ``(base, key, id, job)`` tuples, smallest first."""
    if not groups:
        return iter(())
    offsets = _offsets(groups, settings, now=now, usage=usage, history=history)
    streams = [
        _shifted(entries, *offsets.get(group, (0.0, 0.0))) for group, entries in groups.items()
    ]
    return streams[0] if len(streams) == 1 else heapq.merge(*streams)


def _shifted(entries: Iterable[Entry], base: float, shift: float) -> Iterator[tuple[Any, ...]]:
    for key, job_id, job in entries:
        yield (base, key + shift, job_id, job)


def _offsets(
    groups: Mapping[Group, Sequence[Entry]],
    settings: SchedulerSettings,
    *,
    now: float,
    usage: FairShareUsage,
    history: RuntimeHistory,
) -> dict[Group, tuple[float, float]]:
    """Per group: (base, shift) added to its static keys this pass."""
    strategy = settings.strategy
    if strategy == "fair_share":
        pairs = [(g[1], g[2]) for g in groups if isinstance(g, tuple) and g[0] == "fs"]
        factors = usage.factors(pairs, now)
        return {("fs", *pair): (-factor, 0.0) for pair, factor in factors.items()}
    if strategy == "sjf":
        default_s = settings.default_est_minutes * 60.0
        out: dict[Group, tuple[float, float]] = {}
        for group in groups:
            if isinstance(group, tuple) and group[0] == "hist":
                found = next(
                    (m for key in group[1:] if (m := history.median(key)) is not None), None
                )
                out[group] = (0.0, default_s if found is None else found)
        return out
    return {}
