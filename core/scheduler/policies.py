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
  ``default_est_minutes``), which minimises mean wait. Pure shortest-first leaves the
  longest jobs to the very end, where each runs alone while GPUs idle: the makespan grows
  by nearly the longest job. Aging cannot help there (a batch submitted at once ages
  alike), so sjf also looks at how far the queue is from draining, as LPT scheduling
  does: with ``R`` = the GPU-seconds still to run (pending plus what running jobs have
  left) over the GPU count, a job left behind all other work would end about
  ``d * (1 - gpus / GPU count)`` after ``R``. A job whose overshoot is at least
  :data:`DRAIN_SLACK` of ``R`` is *drain-critical* and goes first, longest first. Each
  holds at least ``DRAIN_SLACK * R`` of the ``GPU count * R`` GPU-seconds left, so there
  are at most ``GPU count / DRAIN_SLACK`` of them, and only as the queue nears its end;
  on one GPU, or for a job that takes every GPU, the order cannot change when the queue
  drains, and nothing is reordered.

To stay fast on long queues, a job's key has a *static* part that depends only on the job
and the settings (so a :class:`~.queue.QueueIndex` can keep it sorted between passes) and a
*group* whose offset is computed once per pass: jobs of one fair-share user and project
share their factor, jobs without ``est_minutes`` and with the same history keys share their
expected runtime (sjf groups also split by GPU count, for the drain rule). A pass merges
the sorted groups lazily, by ``(base, key + shift, id)``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import operator
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, get_args

from loradeck.core.models import Job
from loradeck.core.scheduler.fairshare import FairShareUsage
from loradeck.core.scheduler.history import RuntimeHistory, history_keys
from loradeck.core.settings import SchedulerSettings, Strategy

#: ``(static key, job id, job)``; ids are unique, so entries never compare their jobs.
Entry = tuple[float, int, Job]
Group = Hashable
ALL: Group = ("all",)
"""The one group of the fifo and priority policies."""
POLICIES: frozenset[str] = frozenset(get_args(Strategy))
"""Every ``scheduler.strategy``."""
#: sjf: a job goes first when leaving it to the end would overshoot the drain by this share.
DRAIN_SLACK = 0.5
_KEY = operator.itemgetter(0)
_DRAIN_BASE = -1.0
"""sjf's base for drain-critical jobs: before every other job (whose base is 0)."""


def effective_priority(job: Job, now: float, settings: SchedulerSettings) -> float:
    """``priority + aging_per_hour * hours waited`` (what the priority policy ranks by)."""
    waited_h = max(now - job.created_at, 0.0) / 3600.0
    return job.spec.priority + settings.aging_per_hour * waited_h


def order_fingerprint(settings: SchedulerSettings) -> tuple[str, float]:
    """What static keys depend on: an index built for another fingerprint is not used."""
    return (settings.strategy, settings.aging_per_hour)


def static_key(job: Job, strategy: str, rate_per_s: float) -> tuple[Group, float]:
    """A job's group and static key under ``strategy`` (see module).

    :func:`~.queue.split_queue` computes the same keys inline, for speed."""
    spec = job.spec
    if strategy == "fifo":
        return ALL, float(job.id)
    if strategy == "priority":
        return ALL, rate_per_s * job.created_at - spec.priority
    if strategy == "fair_share":
        return ("fs", spec.user or "", spec.project), rate_per_s * job.created_at - spec.priority
    if strategy == "sjf":
        if spec.est_minutes is not None:
            return ("est", spec.gpus), spec.est_minutes * 60.0
        return ("hist", spec.gpus, *history_keys(spec)), 0.0
    raise ValueError(f"unknown scheduler.strategy {strategy!r}")


def ordered(
    groups: Mapping[Group, Sequence[Entry]],
    settings: SchedulerSettings,
    *,
    now: float,
    usage: FairShareUsage,
    history: RuntimeHistory,
    gpu_count: int = 0,
    busy_gpu_s: float = 0.0,
) -> Iterator[tuple[Any, ...]]:
    """The policy's order, lazily: ``(base, key, id, job)`` tuples, smallest first.

    ``gpu_count`` (the GPUs of the machine) and ``busy_gpu_s`` (GPU-seconds the running
    jobs are still expected to take) let sjf see how far the queue is from draining; with
    ``gpu_count = 0`` sjf is plain shortest-first."""
    if not groups:
        return iter(())
    offsets = _offsets(groups, settings, now=now, usage=usage, history=history)
    if settings.strategy == "sjf" and gpu_count:
        return _drain_first(groups, offsets, gpu_count, busy_gpu_s)
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
                    (m for key in group[2:] if (m := history.median(key)) is not None), None
                )
                out[group] = (0.0, default_s if found is None else found)
        return out
    return {}


def _drain_first(
    groups: Mapping[Group, Sequence[Entry]],
    offsets: Mapping[Group, tuple[float, float]],
    gpu_count: int,
    busy_gpu_s: float,
) -> Iterator[tuple[Any, ...]]:
    """sjf's order: drain-critical jobs longest first, then the rest shortest first.

    Each sjf group holds jobs of one GPU count, sorted by expected runtime, so its critical
    jobs are the tail of its list. Sums are exact (``math.fsum``), so the order does not
    depend on the order the groups come in."""
    shifts = {group: offsets.get(group, (0.0, 0.0))[1] for group in groups}
    pending = [
        _gpus_of(group) * (math.fsum(map(_KEY, entries)) + shifts[group] * len(entries))
        for group, entries in groups.items()
    ]
    drain_s = math.fsum([busy_gpu_s, *pending]) / gpu_count
    critical: list[Entry] = []
    streams: list[Iterator[tuple[Any, ...]]] = []
    for group, entries in groups.items():
        shift = shifts[group]
        share = 1.0 - _gpus_of(group) / gpu_count
        cut = len(entries)
        if share > 0:
            # overshoot d * share >= DRAIN_SLACK * drain  <=>  key + shift >= limit
            limit = DRAIN_SLACK * drain_s / share - shift
            cut = bisect.bisect_left(entries, (limit,))
        critical.extend((-(key + shift), job_id, job) for key, job_id, job in entries[cut:])
        streams.append(_shifted(itertools.islice(entries, cut), 0.0, shift))
    critical.sort()
    first = ((_DRAIN_BASE, key, job_id, job) for key, job_id, job in critical)
    return itertools.chain(first, heapq.merge(*streams))


def _gpus_of(group: Group) -> int:
    """The GPU count of an sjf group (``("est" | "hist", gpus, ...)``)."""
    assert isinstance(group, tuple)
    gpus: int = group[1]
    return gpus
