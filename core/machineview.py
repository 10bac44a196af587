"""What the GPU screen shows, read at one moment: this machine's GPUs with the loradeck
jobs and foreign processes on them, system RAM and CPU; in Slurm mode the nodes of the
cluster (``sinfo``) with the loradeck jobs Slurm runs on each, instead of the GPUs of
the login node (which are not the queue's).

Every reading may block (NVML, /proc, Slurm's commands): call it off a UI thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import psutil

from loradeck.core.errors import LoradeckError
from loradeck.core.facadeviews import ForeignProcess, GpuPanel, MachineReading, NodePanel
from loradeck.core.gpu import GpuInventory, GpuSnapshot, process_name
from loradeck.core.models import Job

if TYPE_CHECKING:
    # Only named in annotations: the facade (and the TUI's first frame) need not load
    # the executors or the scheduler.
    from loradeck.core.executor.slurm_nodes import SlurmNode
    from loradeck.core.executor.slurm_states import SlurmJob

#: Seconds a reading of the nodes is reused: ``sinfo`` asks slurmctld, which a whole
#: cluster shares, so once a second per open TUI would be rude.
NODE_INTERVAL_S = 5.0
#: Seconds the set of loradeck's process ids is reused (finding it scans /proc).
PID_INTERVAL_S = 5.0
_MB_PER_GB = 1024.0


class PidSource(Protocol):
    """Which processes are a job's (the executor)."""

    def pids(self, job: Job) -> list[int]: ...


class ClusterSource(Protocol):
    """The cluster's nodes and where Slurm placed each job: the Slurm executor, or a
    fake in tests."""

    def nodes(self) -> Sequence[SlurmNode]:
        """The nodes (of the configured partition); raises LoradeckError with Slurm's
        message when Slurm cannot be asked."""
        ...

    def slurm_job(self, job: Job) -> SlurmJob | None:
        """What Slurm last said about the job's current attempt, without asking again."""
        ...


def foreign_processes(gpu: GpuSnapshot, loradeck_pids: set[int]) -> tuple[ForeignProcess, ...]:
    """The processes on ``gpu`` that are not loradeck's (none on a simulated GPU)."""
    if gpu.simulated:
        return ()
    return tuple(
        ForeignProcess(p.pid, process_name(p.pid) or "?", p.used_gb)
        for p in gpu.processes
        if p.pid not in loradeck_pids
    )


# --------------------------------------------------------------------------- Slurm nodes

_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _top_level(text: str) -> Iterator[str]:
    """``a[1-2],b`` -> ``a[1-2]``, ``b`` (commas inside brackets do not split)."""
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def _expand_one(name: str) -> list[str]:
    opening = name.find("[")
    closing = name.find("]", opening)
    if opening < 0 or closing < 0:
        return [name]
    head, body, rest = name[:opening], name[opening + 1 : closing], name[closing + 1 :]
    out: list[str] = []
    for part in body.split(","):
        found = _RANGE_RE.match(part.strip())
        if found is None:
            return [name]  # not a host list we understand: keep it whole
        low, high = found.group(1), found.group(2) or found.group(1)
        if int(high) - int(low) > 4096:
            return [name]
        for number in range(int(low), int(high) + 1):
            out.extend(head + str(number).zfill(len(low)) + tail for tail in _expand_one(rest))
    return out


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list as names: ``gpu[01-03,7],login`` -> ``gpu01``,
    ``gpu02``, ``gpu03``, ``gpu7``, ``login``. ``(null)`` and ``None assigned`` are none."""
    text = text.strip()
    if not text or text in ("(null)", "None assigned"):
        return []
    return [host for item in _top_level(text) if item.strip() for host in _expand_one(item.strip())]


def node_panels(
    nodes: Sequence[SlurmNode],
    running: Sequence[Job],
    placed: Callable[[Job], SlurmJob | None],
) -> tuple[NodePanel, ...]:
    """One panel per node (a node listed in several partitions once), with the running
    loradeck jobs that Slurm placed on it."""
    jobs_on: dict[str, list[tuple[int, str]]] = {}
    for job in running:
        row = placed(job)
        if row is None or not row.ran:
            continue
        for host in expand_hostlist(row.nodes):
            jobs_on.setdefault(host, []).append((job.id, job.name))
    panels: dict[str, NodePanel] = {}
    for node in nodes:
        known = panels.get(node.name)
        partition = node.partition.rstrip("*")
        if known is not None:
            if partition not in known.partition.split(","):
                panels[node.name] = _with_partition(known, partition)
            continue
        panels[node.name] = NodePanel(
            name=node.name,
            state=node.state,
            partition=partition,
            gpus_used=node.gpus_used,
            gpus_total=node.gpus_total,
            cpus_used=node.cpus_used,
            cpus_total=node.cpus_total,
            mem_used_gb=node.mem_used_mb / _MB_PER_GB,
            mem_total_gb=node.mem_total_mb / _MB_PER_GB,
            gres=node.gres,
            reason=node.reason,
            jobs=tuple(jobs_on.get(node.name, ())),
        )
    return tuple(panels.values())


def _with_partition(panel: NodePanel, partition: str) -> NodePanel:
    return replace(panel, partition=f"{panel.partition},{partition}")


# --------------------------------------------------------------------------- the reader


class MachineReader:
    """Reads the machine for the GPU screen; keeps what is costly to find for a while
    (loradeck's process ids, the cluster's nodes)."""

    def __init__(
        self,
        inventory: GpuInventory,
        executor: PidSource,
        *,
        cluster: ClusterSource | None = None,
        cluster_label: str = "",
        clock: Callable[[], float] = time.time,
        node_interval: float = NODE_INTERVAL_S,
    ) -> None:
        """With ``cluster`` (Slurm mode) the reading has its nodes instead of GPUs;
        ``cluster_label`` says what they are."""
        self.inventory = inventory
        self._executor = executor
        self._cluster = cluster
        self._cluster_label = cluster_label
        self._clock = clock
        self._node_interval = node_interval
        self._pids: tuple[float, set[int]] = (float("-inf"), set())
        self._nodes: tuple[float, tuple[SlurmNode, ...]] | None = None
        self._node_error: str | None = None

    def read(self, running: Sequence[Job]) -> MachineReading:
        """The reading, given the running loradeck jobs."""
        memory = psutil.virtual_memory()
        ram_used = (memory.total - memory.available) / 2**30
        ram_total = memory.total / 2**30
        cpu = psutil.cpu_percent(interval=None)
        if self._cluster is not None:
            cluster = self._cluster
            nodes_at, nodes = self._read_nodes(cluster)
            return MachineReading(
                taken_at=self._clock(),
                gpus=(),
                ram_used_gb=ram_used,
                ram_total_gb=ram_total,
                cpu_percent=cpu,
                message=self._node_error,
                nodes=node_panels(nodes, running, cluster.slurm_job),
                cluster=self._cluster_label or "Slurm",
                nodes_at=nodes_at,
            )
        from loradeck.core.clusterview import sim_usage

        inventory = self.inventory
        jobs_by_gpu: dict[int, list[tuple[int, str]]] = {}
        for job in running:
            for gpu in job.gpu_ids:
                jobs_by_gpu.setdefault(gpu, []).append((job.id, job.name))
        snapshot = inventory.snapshot(sim_usage=sim_usage(inventory.spec, running))
        pids = set() if inventory.spec.simulated else self._loradeck_pids(running)
        return MachineReading(
            taken_at=snapshot.taken_at,
            gpus=tuple(
                GpuPanel(gpu, tuple(jobs_by_gpu.get(gpu.index, ())), foreign_processes(gpu, pids))
                for gpu in snapshot.gpus
            ),
            ram_used_gb=ram_used,
            ram_total_gb=ram_total,
            cpu_percent=cpu,
            message=snapshot.message,
        )

    def _read_nodes(self, cluster: ClusterSource) -> tuple[float | None, tuple[SlurmNode, ...]]:
        """The nodes as last read, read again when older than the interval. When Slurm
        cannot be asked, the last nodes stay and :attr:`_node_error` says why."""
        now = self._clock()
        if self._nodes is None or now - self._nodes[0] >= self._node_interval:
            try:
                self._nodes = (now, tuple(cluster.nodes()))
                self._node_error = None
            except LoradeckError as err:
                self._node_error = f"cannot read the cluster's nodes: {err.message}"
                # try again at the next interval, not at every reading
                self._nodes = (now, self._nodes[1] if self._nodes else ())
        return self._nodes[0], self._nodes[1]

    def _loradeck_pids(self, running: Sequence[Job]) -> set[int]:
        # A few seconds old is good enough to tell loradeck's processes from foreign ones.
        at, pids = self._pids
        if self._clock() - at < PID_INTERVAL_S:
            return pids
        found: set[int] = set()
        for job in running:
            try:
                found.update(self._executor.pids(job))
            except LoradeckError:
                continue
        self._pids = (self._clock(), found)
        return found
