""":class:`QueueIndex`: the active jobs, with the waiting ones kept in policy order.

A plain list of jobs works as ``SchedulerInput.jobs``, but then every pass walks all of
them and sorts a key per waiting job: 12-30 ms for 10,000 jobs even on a quiet machine,
where merely reading the few fields a pass needs of 10,000 pydantic jobs takes 5-6 ms. An
engine with long queues keeps a ``QueueIndex`` instead (2-4 ms a pass): it *is* the
``Sequence[Job]`` of active jobs (pass it as ``SchedulerInput.jobs``), built once with
:meth:`QueueIndex.build` and replaced by ``index.updated(changed_jobs, removed_ids)``
whenever jobs change (submitted, started, held, ended...; a copy-on-write update copies
references, it never sorts). A pass over an index touches only the running jobs, the jobs
it considers, and the dependents of ended dependencies; reasons for the rest are worked
out when read.

The order it keeps depends on ``scheduler.strategy`` and ``aging_per_hour`` (its
fingerprint); a pass with other settings sorts afresh, so an index built for other settings
is slow, never wrong. Decisions are the same with and without an index.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, overload

from loradeck.core.models import Job, JobState
from loradeck.core.scheduler.history import history_keys
from loradeck.core.scheduler.policies import (
    ALL,
    POLICIES,
    Entry,
    Group,
    order_fingerprint,
    static_key,
)
from loradeck.core.settings import SchedulerSettings

_PENDING, _RUNNING = JobState.PENDING, JobState.RUNNING

_Groups = dict[Group, list[Entry]]


class QueueParts(NamedTuple):
    """The active jobs taken apart for a pass."""

    running: list[Job]
    gpu: _Groups
    """Pending GPU jobs by policy group, each sorted by static key."""
    cpu: _Groups
    """Pending CPU jobs (gpus = 0) by policy group, each sorted by static key."""
    with_deps: list[Job]
    """Pending jobs that have dependencies."""


def split_queue(jobs: Sequence[Job], settings: SchedulerSettings) -> QueueParts:
    """One walk over the active jobs: what a pass without an index needs from them.

    This walk is most of a pass over a plain list: each attribute read of a pydantic job
    costs about 0.1 us, so every field is read once, and the policy's static key
    (:func:`~.policies.static_key`, which an index uses) is computed inline rather than
    by a call per job. Raises ValueError when two jobs share an id."""
    strategy = settings.strategy
    if strategy not in POLICIES:
        raise ValueError(f"unknown scheduler.strategy {strategy!r}")
    fifo, sjf, fair = strategy == "fifo", strategy == "sjf", strategy == "fair_share"
    rate = settings.aging_per_hour / 3600.0
    running: list[Job] = []
    with_deps: list[Job] = []
    ids: list[int] = []
    gpu: _Groups = {}
    cpu: _Groups = {}
    add_id, add_dep = ids.append, with_deps.append
    for job in jobs:
        job_id = job.id
        add_id(job_id)
        state = job.state
        if state is _RUNNING:
            running.append(job)
        elif state is _PENDING:
            spec = job.spec
            gpus = spec.gpus
            group: Group
            if fifo:
                group, key = ALL, float(job_id)
            elif sjf:
                est = spec.est_minutes
                if est is None:
                    group, key = ("hist", gpus, *history_keys(spec)), 0.0
                else:
                    group, key = ("est", gpus), est * 60.0
            else:
                key = rate * job.created_at - spec.priority
                group = ("fs", spec.user or "", spec.project) if fair else ALL
            groups = gpu if gpus else cpu
            entries = groups.get(group)
            if entries is None:
                entries = groups[group] = []
            entries.append((key, job_id, job))
            if job.deps:
                add_dep(job)
    if len(set(ids)) != len(ids):
        raise ValueError("the scheduler's jobs hold two jobs with the same id")
    for groups in (gpu, cpu):
        for entries in groups.values():
            entries.sort()
    return QueueParts(running, gpu, cpu, with_deps)


class QueueIndex(Sequence[Job]):
    """Active jobs (PENDING, HELD, RUNNING), waiting ones pre-ordered; an immutable value.

    As a sequence it holds its jobs (in no promised order)."""

    __slots__ = ("_cpu", "_dependents", "_fingerprint", "_gpu", "_jobs", "_running", "_values")

    def __init__(
        self,
        jobs: dict[int, Job],
        fingerprint: tuple[str, float],
        gpu: _Groups,
        cpu: _Groups,
        dependents: dict[int, tuple[int, ...]],
        running: dict[int, Job],
    ) -> None:
        """Use :meth:`build`."""
        self._jobs = jobs
        self._fingerprint = fingerprint
        self._gpu = gpu
        self._cpu = cpu
        self._dependents = dependents
        self._running = running
        self._values: tuple[Job, ...] | None = None

    @classmethod
    def build(cls, jobs: Iterable[Job], settings: SchedulerSettings) -> QueueIndex:
        """An index of the active ones among ``jobs`` (terminal jobs are left out)."""
        active = [job for job in jobs if not job.state.is_terminal]
        parts = split_queue(active, settings)
        dependents: dict[int, tuple[int, ...]] = {}
        for job in parts.with_deps:
            for dep in job.deps:
                dependents[dep.job_id] = (*dependents.get(dep.job_id, ()), job.id)
        return cls(
            {job.id: job for job in active},
            order_fingerprint(settings),
            parts.gpu,
            parts.cpu,
            dependents,
            {job.id: job for job in parts.running},
        )

    def updated(self, changed: Iterable[Job] = (), removed: Iterable[int] = ()) -> QueueIndex:
        """A new index with ``changed`` jobs put in (a terminal one is taken out) and the
        ``removed`` ids taken out; this one is left as it was."""
        edit = _Edit(self)
        for job_id in removed:
            edit.drop(job_id)
        for job in changed:
            edit.drop(job.id)
            if not job.state.is_terminal:
                edit.put(job)
        return edit.result()

    # ----- what a pass reads
    @property
    def fingerprint(self) -> tuple[str, float]:
        """(strategy, aging_per_hour) the order was built for."""
        return self._fingerprint

    @property
    def gpu_groups(self) -> Mapping[Group, list[Entry]]:
        """Pending GPU jobs by policy group, each sorted by static key."""
        return self._gpu

    @property
    def cpu_groups(self) -> Mapping[Group, list[Entry]]:
        """Pending CPU jobs (gpus = 0) by policy group, each sorted by static key."""
        return self._cpu

    @property
    def dependents(self) -> Mapping[int, tuple[int, ...]]:
        """Dependency id -> ids of pending jobs that wait for it."""
        return self._dependents

    @property
    def running(self) -> Mapping[int, Job]:
        return self._running

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    # ----- sequence of jobs
    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    @overload
    def __getitem__(self, index: int) -> Job: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Job, ...]: ...
    def __getitem__(self, index: int | slice) -> Job | tuple[Job, ...]:
        if self._values is None:
            self._values = tuple(self._jobs.values())
        return self._values[index]


class _Edit:
    """Copy-on-write changes to an index: lists are copied the first time they change."""

    def __init__(self, base: QueueIndex) -> None:
        self.strategy, aging = base.fingerprint
        self.rate = aging / 3600.0
        self.fingerprint = base.fingerprint
        self.jobs = dict(base._jobs)
        self.gpu = dict(base._gpu)
        self.cpu = dict(base._cpu)
        self.dependents = dict(base._dependents)
        self.running = dict(base._running)
        self.copied: set[int] = set()

    def _groups(self, job: Job) -> _Groups:
        return self.gpu if job.spec.gpus else self.cpu

    def _entries(self, groups: _Groups, group: Group) -> list[Entry]:
        entries = groups.get(group)
        if entries is None:
            entries = groups[group] = []
            self.copied.add(id(entries))
        elif id(entries) not in self.copied:
            entries = groups[group] = list(entries)
            self.copied.add(id(entries))
        return entries

    def drop(self, job_id: int) -> None:
        old = self.jobs.pop(job_id, None)
        if old is None:
            return
        self.running.pop(job_id, None)
        if old.state is not _PENDING:
            return
        group, key = static_key(old, self.strategy, self.rate)
        groups = self._groups(old)
        entries = self._entries(groups, group)
        at = bisect.bisect_left(entries, (key, job_id))
        if at < len(entries) and entries[at][1] == job_id:
            del entries[at]
        if not entries:
            del groups[group]
        for dep in old.deps:
            left = tuple(i for i in self.dependents.get(dep.job_id, ()) if i != job_id)
            if left:
                self.dependents[dep.job_id] = left
            else:
                self.dependents.pop(dep.job_id, None)

    def put(self, job: Job) -> None:
        self.jobs[job.id] = job
        if job.state is _RUNNING:
            self.running[job.id] = job
        if job.state is not _PENDING:
            return
        group, key = static_key(job, self.strategy, self.rate)
        bisect.insort(self._entries(self._groups(job), group), (key, job.id, job))
        for dep in job.deps:
            self.dependents[dep.job_id] = (*self.dependents.get(dep.job_id, ()), job.id)

    def result(self) -> QueueIndex:
        return QueueIndex(
            self.jobs, self.fingerprint, self.gpu, self.cpu, self.dependents, self.running
        )
