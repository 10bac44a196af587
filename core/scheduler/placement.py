"""Where jobs fit: GPU occupancy, gang placement with topology, and why a job does not fit.

Rules (``Need`` is a job's shape):

- A job with ``vram_gb`` that is not ``exclusive`` *shares*: it fits on a GPU that no
  whole-GPU job holds, that runs fewer than ``max_jobs_per_gpu`` loradeck jobs, and whose
  free memory holds it. Free memory = usable (``min(total, max_vram_per_gpu)``) minus VRAM
  held by processes loradeck did not start minus the ``vram_gb`` of loradeck jobs on it.
- An ``exclusive`` job with ``vram_gb`` needs a GPU with no loradeck job whose free memory
  holds it.
- A job without ``vram_gb`` takes whole GPUs: no loradeck job on them, and other processes
  holding at most :data:`WHOLE_GPU_FOREIGN_LIMIT` of the GPU (a desktop session is fine, a
  stranger's training run is not).
- A multi-GPU job gets all its GPUs at once, chosen to minimise the largest topology
  distance between them (then the sum, then the preference below).
- Preference: with ``packing = "spread"`` (the default) sharing jobs go to the GPU with
  the fewest loradeck jobs, since jobs on one GPU compete for its compute, then best-fit;
  with ``packing = "pack"`` best-fit only (the GPU left with the least free memory), so
  that whole GPUs stay free for whole-GPU jobs. Whole-GPU jobs take the GPU with the
  least foreign use; ties go to the lowest index.

:class:`Board` is mutable, but only ever local to one pass.
"""

from __future__ import annotations

import itertools
import math

from loradeck.core.models import JobSpec
from loradeck.core.scheduler.model import ClusterView, Need

#: A whole-GPU job does not go where other processes hold more than this share of the GPU.
WHOLE_GPU_FOREIGN_LIMIT = 0.5
#: Exhaustive gang search up to this many GPU combinations, greedy beyond.
MAX_COMBINATIONS = 2000
_EPS = 1e-6


def fmt_gb(value: float) -> str:
    """``16`` for 16.0, ``12.5`` for 12.5: how a request is written back to its author."""
    return f"{value:g}"


def never_fits(spec: JobSpec, cluster: ClusterView) -> str | None:
    """Why ``spec`` can never run on this machine (for rejection at submit), else None.

    Only the machine's fixed shape counts (GPU count, memory, ``max_vram_per_gpu``);
    memory that other processes hold now is transient and only makes a job wait."""
    wanted = spec.gpus
    if wanted == 0:
        return None
    have = len(cluster.gpus)
    if not have:
        return f"it asks for {_gpus(wanted)} and this machine has none; gpus = 0 runs it on CPU"
    if wanted > have:
        return f"it asks for {_gpus(wanted)} and this machine has {have}; lower `gpus`"
    if spec.vram_gb is None:
        return None
    usable = sorted((cluster.usable_gb(g) for g in cluster.gpus), reverse=True)
    if spec.vram_gb <= usable[wanted - 1] + _EPS:
        return None
    largest = max(g.total_gb for g in cluster.gpus)
    capped = (
        f" (max_vram_per_gpu caps each GPU at {fmt_gb(cluster.max_vram_per_gpu)} GiB)"
        if cluster.max_vram_per_gpu is not None and cluster.max_vram_per_gpu < largest
        else ""
    )
    if wanted == 1:
        return (
            f"it needs {fmt_gb(spec.vram_gb)} GiB; the largest GPU here has "
            f"{fmt_gb(usable[0])} GiB{capped}; lower `vram_gb`"
        )
    enough = sum(1 for u in usable if u >= spec.vram_gb - _EPS)
    return (
        f"it needs {fmt_gb(spec.vram_gb)} GiB on each of {wanted} GPUs; "
        f"{enough} {'GPU here has' if enough == 1 else 'GPUs here have'} that much{capped}; "
        "lower `vram_gb` or `gpus`"
    )


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


class Board:
    """GPU occupancy during one pass. Positions 0..n-1 are GPUs in NVML index order."""

    def __init__(self, cluster: ClusterView, max_jobs_per_gpu: int, *, spread: bool = True) -> None:
        self.spread = spread
        """Sharing jobs prefer the GPU with the fewest jobs (then best fit)."""
        gpus = sorted(cluster.gpus, key=lambda g: g.index)
        self.ids: list[int] = [g.index for g in gpus]
        self.position: dict[int, int] = {gid: pos for pos, gid in enumerate(self.ids)}
        self.usable: list[float] = [cluster.usable_gb(g) for g in gpus]
        self.foreign: list[float] = [g.foreign_gb for g in gpus]
        self.used: list[float] = [0.0] * len(gpus)
        """Declared vram_gb of the loradeck jobs on each GPU."""
        self.owners: list[list[int]] = [[] for _ in gpus]
        """Ids of the loradeck jobs on each GPU."""
        self.solid: list[int] = [0] * len(gpus)
        """Whole-GPU or exclusive jobs on each GPU (0 or 1 unless something overcommitted)."""
        self.max_jobs = max_jobs_per_gpu
        self.dist = _distances(cluster, self.ids)

    def copy(self) -> Board:
        other = Board.__new__(Board)
        other.ids, other.position = self.ids, self.position
        other.usable, other.foreign = self.usable, self.foreign
        other.used = list(self.used)
        other.owners = [list(o) for o in self.owners]
        other.solid = list(self.solid)
        other.max_jobs, other.dist = self.max_jobs, self.dist
        other.spread = self.spread
        return other

    # ----- occupancy
    def add(self, job_id: int, need: Need, positions: tuple[int, ...]) -> None:
        for pos in positions:
            self.owners[pos].append(job_id)
            if need.vram_gb is not None:
                self.used[pos] += need.vram_gb
            if need.whole:
                self.solid[pos] += 1

    def remove(self, job_id: int, need: Need, positions: tuple[int, ...]) -> None:
        for pos in positions:
            if job_id in self.owners[pos]:
                self.owners[pos].remove(job_id)
            if need.vram_gb is not None:
                self.used[pos] -= need.vram_gb
            if need.whole:
                self.solid[pos] -= 1

    def free_gb(self, pos: int) -> float:
        return self.usable[pos] - self.foreign[pos] - self.used[pos]

    def can_host(self, pos: int, need: Need) -> bool:
        vram = need.vram_gb
        if need.exclusive or vram is None:
            if self.owners[pos]:
                return False
            if vram is None:
                return self.foreign[pos] <= WHOLE_GPU_FOREIGN_LIMIT * self.usable[pos] + _EPS
            return self.usable[pos] - self.foreign[pos] >= vram - _EPS
        return (
            not self.solid[pos]
            and len(self.owners[pos]) < self.max_jobs
            and self.free_gb(pos) >= vram - _EPS
        )

    def fits_on(self, need: Need, positions: tuple[int, ...]) -> bool:
        return all(self.can_host(pos, need) for pos in positions)

    def ids_of(self, positions: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.ids[pos] for pos in positions)

    # ----- placement
    def place(self, need: Need, avoid: frozenset[int] = frozenset()) -> tuple[int, ...] | None:
        """The GPU positions this job would get now (outside ``avoid``), or None."""
        hosts = [
            pos for pos in range(len(self.ids)) if pos not in avoid and self.can_host(pos, need)
        ]
        if len(hosts) < need.gpus:
            return None
        if need.vram_gb is not None and not need.exclusive:
            vram = need.vram_gb
            if self.spread:
                hosts.sort(key=lambda pos: (len(self.owners[pos]), self.free_gb(pos) - vram, pos))
            else:
                hosts.sort(key=lambda pos: (self.free_gb(pos) - vram, pos))
        else:
            hosts.sort(key=lambda pos: (self.foreign[pos], pos))
        if need.gpus == 1 or self.dist is None:
            return tuple(sorted(hosts[: need.gpus]))
        return tuple(sorted(self._closest(hosts, need.gpus)))

    def _closest(self, hosts: list[int], count: int) -> tuple[int, ...]:
        dist = self.dist
        assert dist is not None
        rank = {pos: r for r, pos in enumerate(hosts)}

        def score(group: tuple[int, ...]) -> tuple[int, int, int]:
            pairs = [dist[a][b] for a, b in itertools.combinations(group, 2)]
            return (max(pairs), sum(pairs), sum(rank[p] for p in group))

        if math.comb(len(hosts), count) <= MAX_COMBINATIONS:
            return min(itertools.combinations(hosts, count), key=score)
        best: tuple[int, ...] | None = None
        for seed in hosts:  # greedy: grow each seed by its nearest hosts
            group = [seed]
            rest = [p for p in hosts if p != seed]
            while len(group) < count:
                nxt = min(rest, key=lambda p: (max(dist[p][g] for g in group), rank[p]))
                group.append(nxt)
                rest.remove(nxt)
            if best is None or score(tuple(group)) < score(best):
                best = tuple(group)
        assert best is not None
        return best

    # ----- reasons
    def explain(self, need: Need) -> str:
        """Why a job of this shape cannot start now, naming the most promising GPU."""
        hosts = [pos for pos in range(len(self.ids)) if self.can_host(pos, need)]
        blocked = [pos for pos in range(len(self.ids)) if pos not in hosts]
        if not blocked:
            return "waiting: GPUs free but none together fit it"
        best = min(blocked, key=lambda pos: self._hopeless(pos, need))
        detail = self._detail(best, need)
        if need.gpus == 1:
            more = f" (best of {len(self.ids)} GPUs)" if len(self.ids) > 1 else ""
            return f"waiting: {detail}{more}"
        if need.whole and need.vram_gb is None:
            what = f"{need.gpus} free GPUs"
        elif need.whole:
            what = f"{need.gpus} free GPUs with {fmt_gb(need.vram_gb or 0)} GiB"
        else:
            what = f"{need.gpus} GPUs with {fmt_gb(need.vram_gb or 0)} GiB free"
        return f"waiting: needs {what}, {len(hosts)} available ({detail})"

    def _hopeless(self, pos: int, need: Need) -> tuple[int, float, int]:
        """Sort key: GPUs closest to taking the job first."""
        if need.whole:
            return (len(self.owners[pos]), self.foreign[pos], pos)
        limited = 1 if self.solid[pos] or len(self.owners[pos]) >= self.max_jobs else 0
        return (limited, -self.free_gb(pos), pos)

    def _detail(self, pos: int, need: Need) -> str:
        gpu = f"GPU {self.ids[pos]}"
        owners = sorted(self.owners[pos])
        jobs = ", ".join(str(j) for j in owners[:3]) + (", ..." if len(owners) > 3 else "")
        noun = "job" if len(owners) == 1 else "jobs"
        if need.whole:
            if owners:
                return f"{gpu} runs {noun} {jobs}"
            if need.vram_gb is None:
                return (
                    f"{gpu} is busy: other processes hold {self.foreign[pos]:.1f} "
                    f"of {self.usable[pos]:.1f} GiB"
                )
            free = self.usable[pos] - self.foreign[pos]
            return f"{gpu} has {free:.1f} GiB free, needs {fmt_gb(need.vram_gb)}"
        if self.solid[pos]:
            return f"{gpu} is held whole by {noun} {jobs}"
        if len(owners) >= self.max_jobs:
            return f"{gpu} runs {len(owners)} jobs (max_jobs_per_gpu {self.max_jobs})"
        return (
            f"{gpu} has {max(self.free_gb(pos), 0.0):.1f} GiB free, "
            f"needs {fmt_gb(need.vram_gb or 0)}"
        )


def _distances(cluster: ClusterView, ids: list[int]) -> list[list[int]] | None:
    """Pairwise topology distance by position, or None when every pair is alike."""
    given = cluster.distance
    if not given:
        return None
    default = max(given.values())
    matrix = [
        [0 if a == b else given.get((a, b), given.get((b, a), default)) for b in ids] for a in ids
    ]
    values = {matrix[i][j] for i in range(len(ids)) for j in range(len(ids)) if i != j}
    return None if len(values) <= 1 else matrix
