"""One scheduling pass: :func:`schedule`, a pure function of its input.

The pass, in order:

1. Running jobs occupy their GPUs and a ``max_concurrent_jobs`` slot until their expected
   end. A pending job whose dependency can no longer be satisfied yields a
   :class:`DependencyFailure`.
2. Pending jobs are taken in policy order (:mod:`.policies`; sjf's also weighs the work
   left, running jobs included). A job still waiting for a dependency or for its retry
   backoff (``not_before``) is passed over; HELD jobs never start. CPU jobs (``gpus = 0``)
   start whenever a slot is free: they never wait behind GPU jobs. A GPU job starts if it
   fits now (:mod:`.placement`). The first GPU job that does not fit gets a reservation
   (:mod:`.backfill`); after it a job starts only if it does not delay the reservation
   (backfill on), or no more GPU jobs start (backfill off).
3. Every pending or held job that does not start has a reason (:mod:`.reasons`).

Speed: a pass over 10,000 waiting jobs should stay near 10 ms, so the order is merged
lazily and consumed only as far as needed; placement failures are memoised per job shape
(capacity only shrinks during a pass, so a shape that does not fit stays unfit); the scan
stops once no GPU has room, or once backfill has tried ``backfill_max_job_test`` jobs;
reasons of jobs it did not reach are worked out when read.
With a :class:`~.queue.QueueIndex` as ``SchedulerInput.jobs`` the order is not even sorted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from loradeck.core.models import TERMINAL_STATES, Job, JobState
from loradeck.core.scheduler.backfill import Release, Reservation, find_reservation
from loradeck.core.scheduler.dependencies import (
    DependencyVerdict,
    check_dependencies,
    first_failure,
)
from loradeck.core.scheduler.history import bound_seconds, expected_seconds
from loradeck.core.scheduler.model import (
    Decision,
    DependencyFailure,
    Need,
    SchedulerInput,
    Start,
)
from loradeck.core.scheduler.placement import WHOLE_GPU_FOREIGN_LIMIT, Board, never_fits
from loradeck.core.scheduler.policies import Entry, Group, order_fingerprint, ordered
from loradeck.core.scheduler.queue import QueueIndex, split_queue
from loradeck.core.scheduler.reasons import PassReasons
from loradeck.core.scheduler.text import fmt_span
from loradeck.core.settings import SchedulerSettings

_PENDING, _RUNNING, _HELD = JobState.PENDING, JobState.RUNNING, JobState.HELD
_CPU = Need(0, None, False)
_EPS = 1e-6
#: Why the scan stopped when no GPU has room (replaced by a per-shape reason when read).
_BOARD_FULL = "waiting: every GPU is in use"


def schedule(inp: SchedulerInput, settings: SchedulerSettings) -> Decision:
    """Decide what starts where now. Pure: same input, same decision; no I/O, no clock.

    ``inp.jobs`` is a list of the active jobs, or a :class:`~.queue.QueueIndex` of them
    (same decision, much faster on long queues). Two jobs with one id are a ValueError."""
    return _Pass(inp, settings).run()


def held_reason(job: Job) -> str:
    """``held``, followed by why when the job's stored reason says more."""
    stored = job.reason
    if not stored or stored == "held":
        return "held"
    return stored if stored.startswith("held") else f"held: {stored}"


class _Stream:
    """A lazily merged queue with a look at its head."""

    __slots__ = ("_rest", "head")

    def __init__(self, entries: Iterator[tuple[Any, ...]]) -> None:
        self._rest = entries
        self.head: tuple[Any, ...] | None = next(entries, None)

    def pop(self) -> Job:
        head = self.head
        assert head is not None
        self.head = next(self._rest, None)
        job: Job = head[-1]
        return job


class _Pass:
    """The working state of one :func:`schedule` call (never outlives it)."""

    def __init__(self, inp: SchedulerInput, settings: SchedulerSettings) -> None:
        self.inp = inp
        self.settings = settings
        self.now = inp.now
        self.default_s = settings.default_est_minutes * 60.0
        self.max_concurrent = settings.max_concurrent_jobs
        self.board = Board(
            inp.cluster, settings.max_jobs_per_gpu, spread=settings.packing == "spread"
        )
        jobs = inp.jobs
        self.index = (
            jobs
            if isinstance(jobs, QueueIndex) and jobs.fingerprint == order_fingerprint(settings)
            else None
        )
        self.reasons: dict[int, str] = {}
        self.failures: list[DependencyFailure] = []
        self.starts: list[Start] = []
        self.releases: list[Release] = []
        self.busy_gpu_s: list[float] = []
        """Per running GPU job: GPU-seconds it is still expected to take (for sjf)."""
        self.active = 0
        self.reservation: Reservation | None = None
        self.waiting_behind = ""
        """Reason for jobs the reservation turns away (set with the reservation)."""
        self.unfit: dict[Need, str] = {}
        """Shapes that cannot be placed any more this pass -> why."""
        self.placements: dict[tuple[Need, frozenset[int]], tuple[int, ...] | None] = {}
        self.board_changed = True
        self.backfill_tested = 0
        self.turned_away: dict[Need, float] = {}
        """Shape -> shortest bound the reservation turned away. The board only fills during
        a pass, so a job of that shape that would run as long or longer is turned away too."""
        self.gpu_groups: Mapping[Group, Sequence[Entry]] = {}
        self.min_vram_gb: float | None = None
        self.tail_gpu: str | None = None
        self.tail_cpu: str | None = None
        self.verdicts: dict[int, DependencyVerdict] = {}
        self._by_id: dict[int, Job] | None = None

    # ----------------------------------------------------------------- the pass
    def run(self) -> Decision:
        index = self.index
        if index is not None:
            running: Iterable[Job] = index.running.values()
            self.gpu_groups, cpu_groups = index.gpu_groups, index.cpu_groups
            candidates = self._index_failure_candidates(index)
        else:
            running, self.gpu_groups, cpu_groups, candidates = split_queue(
                self.inp.jobs, self.settings
            )
        for job in running:
            self._occupy(job)
        self._find_failures(candidates)
        gpu_stream = self._stream(
            self.gpu_groups, gpu_count=len(self.board.ids), busy_gpu_s=math.fsum(self.busy_gpu_s)
        )
        self._scan(gpu_stream, self._stream(cpu_groups))
        res = self.reservation
        reservations = {res.job_id: (self.board.ids_of(res.positions), res.start)} if res else {}
        return Decision(
            starts=tuple(self.starts),
            reasons=PassReasons(
                self.reasons,
                self.inp.jobs,
                self.lookup,
                frozenset(s.job_id for s in self.starts),
                self._late_reason,
            ),
            dependency_failures=tuple(self.failures),
            reservations=reservations,
        )

    def _stream(
        self, groups: Mapping[Group, Sequence[Entry]], gpu_count: int = 0, busy_gpu_s: float = 0.0
    ) -> _Stream:
        inp = self.inp
        return _Stream(
            ordered(
                groups,
                self.settings,
                now=self.now,
                usage=inp.usage,
                history=inp.history,
                gpu_count=gpu_count,
                busy_gpu_s=busy_gpu_s,
            )
        )

    def _scan(self, gpu: _Stream, cpu: _Stream) -> None:
        stop_gpu: str | None = None
        slots_reason: str | None = None
        reasons = self.reasons
        while gpu.head is not None or cpu.head is not None:
            if self.max_concurrent and self.active >= self.max_concurrent:
                slots_reason = f"waiting: max_concurrent_jobs ({self.max_concurrent}) reached"
                break
            head = cpu.head
            if head is not None and (stop_gpu is not None or gpu.head is None or head < gpu.head):
                job = cpu.pop()
                why = self._gate(job)
                if why is None:
                    self._start(job, _CPU, ())
                else:
                    reasons[job.id] = why
                continue
            if stop_gpu is not None:
                break
            job = gpu.pop()
            why = self._gate(job)
            if why is None:
                self._consider(job)
                stop_gpu = self._why_stop()
            else:
                reasons[job.id] = why
        if stop_gpu is _BOARD_FULL and self.reservation is None:
            self._reserve_next(gpu)
        self.tail_gpu = slots_reason or stop_gpu
        self.tail_cpu = slots_reason

    def _reserve_next(self, gpu: _Stream) -> None:
        """The scan stopped on a full board: still tell the next GPU job when it may start."""
        while gpu.head is not None and self.reservation is None:
            job = gpu.pop()
            why = self._gate(job)
            if why is not None:
                self.reasons[job.id] = why
                continue
            self._consider(job)
            if job.id in self.reasons and self.reservation is None:
                continue  # it can never fit, or nobody can say when: try the next one
            return

    # ----------------------------------------------------------------- one job
    def _consider(self, job: Job) -> None:
        spec = job.spec
        need = Need(spec.gpus, spec.vram_gb, spec.exclusive)
        unfit = self.unfit.get(need)
        if unfit is not None:
            self.reasons[job.id] = unfit
            return
        res = self.reservation
        bound = 0.0
        if res is not None:
            self.backfill_tested += 1
            bound = bound_seconds(spec, self.inp.history, self.default_s)
            if bound >= self.turned_away.get(need, math.inf):
                self.reasons[job.id] = self.waiting_behind
                return
        positions = self._place(need, frozenset())
        if positions is None:
            self.reasons[job.id] = self._mark_unfit(job, need)
            if res is None:
                self._reserve(job, need)
            return
        if res is not None and self.now + bound > res.start + _EPS:
            # past the reserved start: keep off the reserved GPUs when possible
            positions = self._place(need, res.avoid) or positions
            if not res.admits(job.id, need, positions, self.now + bound):
                self.turned_away[need] = bound
                self.reasons[job.id] = self.waiting_behind
                return
        self._start(job, need, positions)

    def _place(self, need: Need, avoid: frozenset[int]) -> tuple[int, ...] | None:
        """:meth:`Board.place`, remembered until the board changes (a long queue holds
        thousands of jobs of a handful of shapes)."""
        key = (need, avoid)
        if key in self.placements:
            return self.placements[key]
        found = self.placements[key] = self.board.place(need, avoid)
        return found

    def _reserve(self, job: Job, need: Need) -> None:
        res = find_reservation(
            job.id,
            need,
            self.board,
            self.releases,
            now=self.now,
            active=self.active,
            max_concurrent=self.max_concurrent,
        )
        if res is None:
            return  # nobody can say when it fits: the next blocked job gets the reservation
        self.reservation = res
        ids = self.board.ids_of(res.positions)
        gpus = ("GPU " if len(ids) == 1 else "GPUs ") + ",".join(str(g) for g in ids)
        when = fmt_span(res.start - self.now)
        self.reasons[job.id] += f"; {gpus} reserved for it in ~{when}"
        self.waiting_behind = (
            f"waiting: reservation for job {job.id} ({gpus} in ~{when}); "
            "starting now would delay it"
        )

    def _mark_unfit(self, job: Job, need: Need) -> str:
        never = never_fits(job.spec, self.inp.cluster)
        reason = f"cannot run here: {never}" if never else self.board.explain(need)
        self.unfit[need] = reason
        return reason

    def _start(self, job: Job, need: Need, positions: tuple[int, ...]) -> None:
        board = self.board
        self.placements.clear()
        self.board_changed = True
        self.starts.append(Start(job.id, board.ids_of(positions)))
        board.add(job.id, need, positions)
        self.active += 1
        end = self.now + bound_seconds(job.spec, self.inp.history, self.default_s)
        self.releases.append(Release(end, job.id, need, positions))
        res = self.reservation
        if res is not None and not need.gpus and end > res.start + _EPS:
            res.active_at_start += 1  # CPU jobs never wait, but they do hold a slot then

    def _occupy(self, job: Job) -> None:
        spec = job.spec
        need = Need(spec.gpus, spec.vram_gb, spec.exclusive)
        board = self.board
        positions = tuple(board.position[g] for g in job.gpu_ids if g in board.position)
        board.add(job.id, need, positions)
        self.active += 1
        started = job.started_at if job.started_at is not None else self.now
        end = max(started + bound_seconds(spec, self.inp.history, self.default_s), self.now)
        self.releases.append(Release(end, job.id, need, positions))
        if spec.gpus:
            left = started + expected_seconds(spec, self.inp.history, self.default_s) - self.now
            self.busy_gpu_s.append(spec.gpus * max(left, 0.0))

    # ----------------------------------------------------------------- gates
    def _gate(self, job: Job) -> str | None:
        """Why a pending job may not start yet (dependency, backoff), or None."""
        if job.deps:
            verdict = self._verdict(job)
            if not verdict.ready:
                return verdict.reason
        not_before = job.not_before
        if not_before is not None and not_before > self.now:
            return f"retry backoff: retry in {fmt_span(not_before - self.now)}"
        return None

    def _verdict(self, job: Job) -> DependencyVerdict:
        verdict = self.verdicts.get(job.id)
        if verdict is None:
            verdict = self.verdicts[job.id] = check_dependencies(job.deps, self._state_of)
        return verdict

    def _find_failures(self, candidates: Iterable[Job]) -> None:
        action = self.settings.on_dependency_failure
        state_of = self._state_of
        found = [
            DependencyFailure(job.id, failed[0], action, failed[1])
            for job in candidates
            if (failed := first_failure(job.deps, state_of)) is not None
        ]
        found.sort(key=lambda failure: failure.job_id)  # by id, whatever the input order
        for failure in found:
            self.reasons[failure.job_id] = failure.reason
        self.failures = found

    def _index_failure_candidates(self, index: QueueIndex) -> list[Job]:
        """Pending jobs with a dependency that has ended: the only ones that can fail."""
        dependents = index.dependents
        states = self.inp.dep_states
        if len(states) <= len(dependents):
            ended = [d for d, s in states.items() if s in TERMINAL_STATES and d in dependents]
        else:
            ended = [d for d in dependents if states.get(d) in TERMINAL_STATES]
        ids = sorted({job_id for dep in ended for job_id in dependents[dep]})
        return [job for job_id in ids if (job := index.get(job_id)) is not None]

    def lookup(self, job_id: int) -> Job | None:
        """An active job by id."""
        if self.index is not None:
            return self.index.get(job_id)
        if self._by_id is None:
            self._by_id = {job.id: job for job in self.inp.jobs}
        return self._by_id.get(job_id)

    def _state_of(self, job_id: int) -> JobState | None:
        state = self.inp.dep_states.get(job_id)
        if state is not None:
            return state
        job = self.lookup(job_id)
        return None if job is None else job.state

    def _late_reason(self, job: Job) -> str:
        """The reason of a job the scan did not write one for (read after the pass)."""
        if job.state is _HELD:
            return held_reason(job)
        why = self._gate(job)
        if why is not None:
            return why
        spec = job.spec
        tail = self.tail_gpu if spec.gpus else self.tail_cpu
        if tail is _BOARD_FULL:
            # the board is as the scan left it (CPU jobs do not touch it): say what is full
            need = Need(spec.gpus, spec.vram_gb, spec.exclusive)
            return self.unfit.get(need) or self._mark_unfit(job, need)
        return tail or "waiting"

    def _why_stop(self) -> str | None:
        """Why no further GPU job is worth looking at this pass, or None to go on."""
        res = self.reservation
        if res is not None and not self.settings.backfill:
            return f"queued behind job {res.job_id} (backfill is off)"
        limit = self.settings.backfill_max_job_test
        if res is not None and self.backfill_tested >= limit:
            return (
                f"waiting: behind job {res.job_id}, which has a reservation "
                f"(backfill looks at {limit} jobs a pass)"
            )
        if self.board_changed:
            self.board_changed = False
            if self._board_full():
                return _BOARD_FULL
        return None

    def _board_full(self) -> bool:
        """No GPU could take any job left (conservative: when unsure, it is not full)."""
        board = self.board
        for pos in range(len(board.ids)):
            owners = board.owners[pos]
            if not owners:
                if board.foreign[pos] <= WHOLE_GPU_FOREIGN_LIMIT * board.usable[pos] + _EPS:
                    return False  # a whole-GPU job could have it
                room = board.usable[pos] - board.foreign[pos]
            elif board.solid[pos] or len(owners) >= board.max_jobs:
                continue
            else:
                room = board.free_gb(pos)
            if room >= self._smallest_vram() - _EPS:
                return False
        return True

    def _smallest_vram(self) -> float:
        """The least ``vram_gb`` any waiting GPU job declares (once per pass, if asked)."""
        if self.min_vram_gb is None:
            self.min_vram_gb = min(
                (
                    vram
                    for entries in self.gpu_groups.values()
                    for _, _, job in entries
                    if (vram := job.spec.vram_gb) is not None
                ),
                default=math.inf,
            )
        return self.min_vram_gb
