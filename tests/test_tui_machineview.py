"""The GPU screen's reading (core.machineview): GPUs with their jobs, and in Slurm mode
the cluster's nodes from a node listing (a fake Slurm here; tests/test_tui_slurm.py
reads the real dev cluster)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.slurm_nodes import SlurmNode, parse_sinfo
from loradeck.core.executor.slurm_states import SlurmJob
from loradeck.core.gpu import GpuInventory
from loradeck.core.machineview import MachineReader, expand_hostlist, node_panels
from loradeck.core.models import Job, JobSpec, JobState

#: What ``sinfo -N -h -O <SINFO_FORMAT>`` prints for a small cluster: node gpu01 in two
#: partitions, a drained node, a CPU node.
SINFO = (
    "gpu01|mixed|gpu*|24/40/0/64|515000|184320|gpu:a100:4|gpu:a100:3(IDX:0-2)|none|\n"
    "gpu01|mixed|long|24/40/0/64|515000|184320|gpu:a100:4|gpu:a100:3(IDX:0-2)|none|\n"
    "gpu02|drained|gpu*|0/64/0/64|515000|0|gpu:a100:4|gpu:a100:0(IDX:N/A)|ECC errors|\n"
    "cpu01|idle|gpu*|0/32/0/32|128000|0|(null)|gpu:0|none|\n"
)


def _job(job_id: int, gpu_ids: tuple[int, ...] = ()) -> Job:
    folder = Path("/tmp/loradeck-machineview") / str(job_id)
    job = Job(
        id=job_id,
        spec=JobSpec(name=f"job{job_id}", command="true", gpus=len(gpu_ids) or 1),
        command="true",
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=time.time(),
    )
    return job.transition(JobState.RUNNING, gpu_ids=gpu_ids, attempts=1, started_at=time.time())


class FakeSlurm:
    """A node listing and job placement, as the Slurm executor gives them."""

    def __init__(self, sinfo: str, placed: dict[int, str]) -> None:
        self.sinfo = sinfo
        self.placed = placed
        self.calls = 0
        self.broken: str | None = None

    def nodes(self) -> Sequence[SlurmNode]:
        self.calls += 1
        if self.broken:
            raise ExecutorError(self.broken, title="slurm")
        return parse_sinfo(self.sinfo)

    def slurm_job(self, job: Job) -> SlurmJob | None:
        where = self.placed.get(job.id)
        return None if where is None else SlurmJob(f"{100 + job.id}", "RUNNING", nodes=where)


class NoPids:
    def pids(self, job: Job) -> list[int]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("gpu01", ["gpu01"]),
        ("gpu[01-03,7]", ["gpu01", "gpu02", "gpu03", "gpu7"]),
        ("a[1-2],b,c[09-10]", ["a1", "a2", "b", "c09", "c10"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("(null)", []),
        ("None assigned", []),
        ("", []),
        ("odd[x-y]", ["odd[x-y]"]),
    ],
)
def test_host_lists_expand_as_slurm_writes_them(text: str, hosts: list[str]) -> None:
    assert expand_hostlist(text) == hosts


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab01-,[]", max_size=30))
def test_any_host_list_text_gives_names(text: str) -> None:
    hosts = expand_hostlist(text)
    assert all(isinstance(host, str) and host for host in hosts)


def test_node_panels_merge_partitions_and_place_jobs() -> None:
    slurm = FakeSlurm(SINFO, {1: "gpu01", 2: "gpu[01-02]"})
    panels = node_panels(slurm.nodes(), [_job(1), _job(2), _job(3)], slurm.slurm_job)
    assert [p.name for p in panels] == ["gpu01", "gpu02", "cpu01"]
    gpu01, gpu02, cpu01 = panels
    assert gpu01.partition == "gpu,long"
    assert (gpu01.gpus_used, gpu01.gpus_total, gpu01.cpus_used, gpu01.cpus_total) == (3, 4, 24, 64)
    assert gpu01.mem_used_gb == pytest.approx(180.0) and gpu01.gres == "gpu:a100:4"
    assert gpu01.jobs == ((1, "job1"), (2, "job2"))
    assert gpu02.jobs == ((2, "job2"),) and gpu02.reason == "ECC errors"
    assert (cpu01.gpus_total, cpu01.gres, cpu01.jobs) == (0, "", ())


def test_the_reader_asks_slurm_at_most_once_per_interval() -> None:
    clock = Clock()
    slurm = FakeSlurm(SINFO, {1: "gpu01"})
    reader = MachineReader(
        GpuInventory("sim:2"),
        NoPids(),
        cluster=slurm,
        cluster_label="Slurm partition gpu",
        clock=clock,
        node_interval=5.0,
    )
    first = reader.read([_job(1)])
    assert first.cluster == "Slurm partition gpu" and first.gpus == ()
    assert [n.name for n in first.nodes] == ["gpu01", "gpu02", "cpu01"]
    assert first.nodes[0].jobs == ((1, "job1"),) and first.nodes_at == 1000.0
    clock.now += 1.0
    again = reader.read([])  # the nodes are not read again, but the jobs are placed anew
    assert slurm.calls == 1 and again.nodes_at == 1000.0 and again.nodes[0].jobs == ()
    clock.now += 5.0
    reader.read([])
    assert slurm.calls == 2


def test_an_unreachable_slurm_keeps_the_last_nodes_and_says_why() -> None:
    clock = Clock()
    slurm = FakeSlurm(SINFO, {})
    reader = MachineReader(GpuInventory("sim:1"), NoPids(), cluster=slurm, clock=clock)
    assert reader.read([]).message is None
    slurm.broken = "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    clock.now += 10.0
    reading = reader.read([])
    assert reading.message is not None and "Unable to contact slurm controller" in reading.message
    assert len(reading.nodes) == 3 and reading.cluster == "Slurm"
    clock.now += 1.0
    reader.read([])
    assert slurm.calls == 2  # the next try waits for the interval too
    slurm.broken = None
    clock.now += 10.0
    assert reader.read([]).message is None and slurm.calls == 3


def test_without_slurm_the_reading_has_the_gpus_and_their_jobs() -> None:
    reader = MachineReader(GpuInventory("sim:2x24"), NoPids())
    reading = reader.read([_job(1, (0,)), _job(2, (0, 1))])
    assert reading.nodes == () and reading.cluster == ""
    assert [panel.jobs for panel in reading.gpus] == [
        ((1, "job1"), (2, "job2")),
        ((2, "job2"),),
    ]
    assert all(panel.foreign == () for panel in reading.gpus)
    assert reading.ram_total_gb > 0
