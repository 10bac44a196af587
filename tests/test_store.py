"""The durable store: round trips, archive, file modes, many processes, SIGKILL, corruption."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinydb import TinyDB

from loradeck.core.errors import StoreCorruptError, StoreError, UnknownJobError
from loradeck.core.models import ALLOWED_TRANSITIONS, Batch, Job, JobSpec, JobState
from loradeck.core.store import Store, StoreTuning, Transaction

# Compact after (nearly) every commit and archive every finished job at once.
EAGER = StoreTuning(
    compact_bytes=1, archive_after=0, keep_finished=0, archive_batch=1, max_archives=2
)


def make_job(home: Path, job_id: int, name: str | None = None, **changes: object) -> Job:
    job = Job(
        id=job_id,
        spec=JobSpec(name=name or f"job-{job_id}", command="true"),
        command="true",
        output_dir=home / "jobs" / str(job_id),
        log_file=home / "jobs" / str(job_id) / "output.log",
        created_at=time.time(),
    )
    return job.evolve(**changes) if changes else job


def add_jobs(store: Store, names: list[str]) -> list[Job]:
    with store.transaction() as txn:
        jobs = [make_job(store.home, txn.next_job_id(), name) for name in names]
        for job in jobs:
            txn.put(job)
    return jobs


def finish(job: Job) -> Job:
    return job.transition(JobState.RUNNING, started_at=time.time()).transition(
        JobState.COMPLETED, ended_at=time.time(), exit_code=0
    )


class _RollbackError(Exception):
    pass


def failed_transaction(store: Store, body: Callable[[Transaction], object]) -> Transaction:
    """Runs ``body`` in a transaction that then raises; returns that (finished) transaction."""
    seen: list[Transaction] = []

    def run() -> None:
        with store.transaction() as txn:
            seen.append(txn)
            body(txn)
            raise _RollbackError

    with pytest.raises(_RollbackError):
        run()
    return seen[0]


def store_files(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((home / "store").iterdir())}


# --------------------------------------------------------------------------- basics


def test_round_trip(home: Path) -> None:
    store = Store(home)
    first, second, again = add_jobs(store, ["a", "b", "a"])
    with store.transaction() as txn:
        batch = Batch(
            id=txn.next_batch_id(),
            path=home / "batch.toml",
            digest="abc",
            submitted_at=1.0,
            job_ids=(first.id, second.id),
        )
        txn.put_batch(batch)
    running = store.update(second.id, lambda j: j.transition(JobState.RUNNING, started_at=2.0))

    assert store.get(first.id) == first
    assert store.get(second.id) == running
    assert store.jobs() == [first, running, again]
    assert store.jobs(active_only=True) == [first, running, again]
    assert store.find_by_name("a") == again
    assert store.find_by_name("nope") is None
    assert store.batches() == [batch]
    assert store.get_batch(batch.id) == batch
    with pytest.raises(UnknownJobError, match="no job 99 in this home; `loradeck list`"):
        store.get(99)
    with pytest.raises(UnknownJobError, match="no batch 7"):
        store.get_batch(7)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(first.id)


def test_reopen_sees_everything(home: Path) -> None:
    store = Store(home)
    jobs = add_jobs(store, [f"j{i}" for i in range(20)])
    done = store.update(jobs[3].id, finish)
    store.close()
    with Store(home) as again:
        assert again.jobs() == [done if j.id == done.id else j for j in jobs]
        assert again.jobs(active_only=True) == [j for j in jobs if j.id != done.id]


def test_ids_unique_increasing_and_never_reused(home: Path) -> None:
    store = Store(home)
    with store.transaction() as txn:
        ids = [txn.next_job_id() for _ in range(3)]
        batch_ids = [txn.next_batch_id() for _ in range(2)]
        for job_id in ids:
            txn.put(make_job(home, job_id))
    assert ids == [1, 2, 3]
    assert batch_ids == [1, 2]
    failed_transaction(store, lambda txn: txn.put(make_job(home, txn.next_job_id())))
    with store.transaction() as txn:
        # A rolled-back reservation may be handed out again; a committed one never.
        assert txn.next_job_id() == 4
        txn.put(make_job(home, 10))  # an explicit id moves the counter past it
        assert txn.next_job_id() == 11
        # Ids reserved by a committed transaction are spent, used or not.
    store.close()
    with Store(home) as again, again.transaction() as txn:
        assert txn.next_job_id() == 12
        assert txn.next_batch_id() == 3


def test_transaction_that_raises_leaves_nothing(home: Path) -> None:
    store = Store(home)
    [kept] = add_jobs(store, ["kept"])
    before = store_files(home)
    revision = store.revision

    def lose(txn: Transaction) -> None:
        txn.put(make_job(home, txn.next_job_id(), "lost"))
        txn.put(kept.transition(JobState.HELD, reason="lost too"))

    leaked = failed_transaction(store, lose)
    assert store.jobs() == [kept]
    assert store.revision == revision
    assert store_files(home) == before
    with pytest.raises(StoreError, match="transaction is over"):
        leaked.put(kept)
    with Store(home) as again:
        assert again.jobs() == [kept]


def test_transaction_sees_its_own_puts(home: Path) -> None:
    store = Store(home)
    [old] = add_jobs(store, ["x"])
    with store.transaction() as txn:
        new = make_job(home, txn.next_job_id(), "x")
        txn.put(new)
        held = old.transition(JobState.CANCELLED, ended_at=1.0)
        txn.put(held)
        assert txn.get(new.id) == new
        assert txn.find_by_name("x") == new
        assert txn.jobs() == [held, new]
        assert txn.jobs(active_only=True) == [new]
        batch = Batch(id=txn.next_batch_id(), path=None, digest="d", submitted_at=0, job_ids=())
        txn.put_batch(batch)
        assert txn.batches() == [batch]
        # Other readers see nothing until the commit.
        assert store.jobs() == [old]
    assert store.jobs() == [held, new]


def test_nested_transaction_is_refused(home: Path) -> None:
    store = Store(home)
    with store.transaction(), pytest.raises(StoreError, match="already open"):
        store.update(1, lambda j: j)


def test_threads_share_one_store(home: Path) -> None:
    store = Store(home)
    jobs = add_jobs(store, [f"t{i}" for i in range(8)])
    errors: list[BaseException] = []

    def hammer(job: Job) -> None:
        try:
            for _ in range(10):
                store.update(job.id, lambda j: j.evolve(attempts=j.attempts + 1))
                store.jobs()
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=hammer, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert [j.attempts for j in Store(home).jobs()] == [10] * 8


def test_file_modes(home: Path) -> None:
    old = os.umask(0)  # the modes must not depend on the umask
    try:
        store = Store(home, EAGER)
        jobs = add_jobs(store, ["a", "b", "c"])
        for job in jobs:
            store.update(job.id, finish)
        store.compact()
    finally:
        os.umask(old)
    folder = home / "store"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert {"lock", "snapshot.json", "snapshot.prev.json"} <= set(names)
    assert any(n.startswith("archive-") for n in names)
    assert any(n.startswith("journal-") for n in names)
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# --------------------------------------------------------------------------- archive


def test_archive_keeps_jobs_readable(home: Path) -> None:
    store = Store(home, EAGER)
    jobs = add_jobs(store, ["a", "b", "a", "c"])
    finished = [store.update(j.id, finish) for j in jobs[:3]]
    store.compact()
    active = TinyDB(home / "store" / "snapshot.json", access_mode="r")
    assert [int(doc.doc_id) for doc in active.table("jobs").all()] == [jobs[3].id]
    archived = [p for p in (home / "store").iterdir() if p.name.startswith("archive-")]
    assert archived
    assert store.jobs(active_only=True) == [jobs[3]]
    assert store.jobs() == [*finished, jobs[3]]
    assert store.get(finished[0].id) == finished[0]
    assert store.find_by_name("a") == finished[2]

    # A fresh process reads archived jobs too; a retried one comes back to the working set.
    other = Store(home, EAGER)
    assert other.find_by_name("a") == finished[2]
    retried = other.update(finished[2].id, lambda j: j.transition(JobState.PENDING))
    other.compact()
    assert store.jobs(active_only=True) == [retried, jobs[3]]
    assert store.find_by_name("a") == retried
    assert store.get(retried.id) == retried
    for _ in range(5):  # more archives than max_archives: they are merged
        [extra] = add_jobs(other, ["a"])
        other.update(extra.id, finish)
        other.compact()
    with Store(home) as fresh:
        assert fresh.jobs() == store.jobs()
        assert fresh.get(retried.id) == retried
        assert fresh.find_by_name("a") == store.find_by_name("a")
        assert fresh.find_by_name("a").id == extra.id  # type: ignore[union-attr]


def test_finished_jobs_beyond_the_count_are_archived(home: Path) -> None:
    tuning = StoreTuning(keep_finished=2, archive_batch=1, archive_after=1e9)
    store = Store(home, tuning)
    jobs = add_jobs(store, [f"j{i}" for i in range(6)])
    for job in jobs[:5]:
        store.update(job.id, finish)
    store.compact()
    active = TinyDB(home / "store" / "snapshot.json", access_mode="r").table("jobs")
    assert sorted(doc.doc_id for doc in active.all()) == [4, 5, 6]
    assert len(store.jobs()) == 6


# --------------------------------------------------------------------------- processes


def _writer(home: str, rank: int, barrier: object, inherited: Store | None) -> None:
    store = (
        inherited if inherited is not None else Store(Path(home), StoreTuning(compact_bytes=20_000))
    )
    barrier.wait(timeout=120)  # type: ignore[attr-defined]
    for round_ in range(4):
        with store.transaction() as txn:
            ids = [txn.next_job_id() for _ in range(5)]
            for job_id in ids:
                txn.put(make_job(Path(home), job_id, f"p{rank}-{round_}"))
            batch_id = txn.next_batch_id()
            txn.put_batch(
                Batch(
                    id=batch_id,
                    path=None,
                    digest=f"{rank}-{round_}",
                    submitted_at=time.time(),
                    job_ids=tuple(ids),
                )
            )
        assert store.get_batch(batch_id).job_ids == tuple(ids)


@pytest.mark.slow
def test_fifty_processes_write_at_once(home: Path) -> None:
    parent = Store(home, StoreTuning(compact_bytes=20_000))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(50)
    # Half the children use the store object inherited through fork, half open their own.
    procs = [
        context.Process(
            target=_writer, args=(str(home), rank, barrier, parent if rank % 2 else None)
        )
        for rank in range(50)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=240)
    assert [proc.exitcode for proc in procs] == [0] * 50

    with Store(home) as store:
        jobs = store.jobs()
        assert [job.id for job in jobs] == list(range(1, 1001))  # unique, none lost
        batches = store.batches()
        assert len(batches) == 200
        assert len({b.id for b in batches}) == 200
        for batch in batches:
            names = {store.get(job_id).name for job_id in batch.job_ids}
            assert names == {f"p{batch.digest}"}
    parent.refresh()
    assert parent.jobs() == jobs
    db = TinyDB(home / "store" / "snapshot.json", access_mode="r")
    assert {"meta", "jobs", "batches"} <= db.tables()


def _busy_writer(home: str, count: int) -> None:
    store = Store(Path(home), EAGER)
    for i in range(count):
        [job] = add_jobs(store, [f"w{i}"])
        if i % 3 == 0:
            store.update(job.id, finish)


def test_reader_follows_a_compacting_writer(home: Path) -> None:
    reader = Store(home, EAGER)
    writer = multiprocessing.get_context("fork").Process(target=_busy_writer, args=(str(home), 150))
    writer.start()
    seen = 0
    deadline = time.monotonic() + 120
    while writer.is_alive() or seen < 150:
        assert time.monotonic() < deadline, "the reader never caught up"
        reader.refresh()
        jobs = reader.jobs()
        assert len(jobs) >= seen  # never goes back
        assert [j.id for j in jobs] == list(range(1, len(jobs) + 1))
        seen = len(jobs)
        if not writer.is_alive() and writer.exitcode != 0:
            break
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert seen == 150
    reader.refresh()  # what the last jobs() caught up with counts once
    assert reader.refresh() is False


_KILLED_CHILD = r"""
import os, sys, time
from pathlib import Path
import loradeck.core.journal as journal
from loradeck.core.models import Job, JobSpec, JobState
from loradeck.core.store import Store, StoreTuning

home, crash_in, crash_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
calls = {"write": 0, "replace": 0}
real_write_all, real_replace = journal.write_all, os.replace


def crash_point():
    print("crash-point 0", flush=True)
    time.sleep(600)  # the parent kills us here


def write_all(fd, data):  # what write_atomic writes: snapshots and archive files
    calls["write"] += 1
    if crash_in == "write" and calls["write"] == crash_at:
        real_write_all(fd, data[: len(data) // 2])
        crash_point()
    real_write_all(fd, data)


def replace(src, dst):  # renames during compaction
    real_replace(src, dst)
    calls["replace"] += 1
    if crash_in == "replace" and calls["replace"] == crash_at:
        crash_point()


journal.write_all, os.replace = write_all, replace
tuning = StoreTuning(compact_bytes=1, archive_after=0, keep_finished=3, archive_batch=2,
                     max_archives=3)
store = Store(home, tuning)
pad = ["x" * 500] * 8  # bigger lines, longer writes
while True:
    with store.transaction() as txn:
        job_id = txn.next_job_id()
        txn.put(Job(id=job_id, spec=JobSpec(name=f"k{job_id}", command="true", tags=pad),
                    command="true", output_dir=home / "jobs" / str(job_id),
                    log_file=home / "jobs" / str(job_id) / "output.log",
                    created_at=time.time()))
    print("put", job_id, flush=True)
    if job_id > 2:
        store.update(job_id - 2, lambda j: j.transition(JobState.CANCELLED, ended_at=time.time()))
        print("cancel", job_id - 2, flush=True)
"""


def _kill_child(
    home: Path, crash_in: str, crash_at: int, kill_after: int
) -> tuple[set[int], set[int]]:
    """Runs the child until ``kill_after`` acknowledged writes or its crash point, then
    SIGKILLs it; returns the job ids whose put, and whose cancel, was acknowledged."""
    puts: set[int] = set()
    cancels: set[int] = set()
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(home), crash_in, str(crash_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        while len(puts) + len(cancels) < kill_after:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the child died early: {proc.communicate()[1]}")
            kind, job_id = line.split()
            if kind == "crash-point":
                break
            (puts if kind == "put" else cancels).add(int(job_id))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    for line in rest.splitlines():  # printed before the kill: acknowledged too
        kind, job_id = line.split()
        (puts if kind == "put" else cancels).add(int(job_id))
    assert proc.returncode == -signal.SIGKILL
    return puts, cancels


def _check_acknowledged(home: Path, puts: set[int], cancels: set[int]) -> None:
    with Store(home) as store:
        stored = {job.id: job for job in store.jobs()}
        assert puts <= stored.keys()
        for job_id in cancels:
            assert stored[job_id].state is JobState.CANCELLED


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_write(home: Path) -> None:
    puts: set[int] = set()
    cancels: set[int] = set()
    for kill_after in (3, 11, 26, 41, 58):
        more_puts, more_cancels = _kill_child(home, "none", 0, kill_after)
        puts |= more_puts
        cancels |= more_cancels
        _check_acknowledged(home, puts, cancels)
    with Store(home) as store:
        add_jobs(store, ["after the crashes"])  # writes on top of any torn tail
    with Store(home) as store:
        assert {job.id for job in store.jobs()} >= puts
        assert store.find_by_name("after the crashes") is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("crash_in", "crash_at"),
    [("write", 1), ("write", 4), ("write", 9), ("replace", 1), ("replace", 5), ("replace", 12)],
)
def test_sigkill_inside_compaction(home: Path, crash_in: str, crash_at: int) -> None:
    """Killed half-way through writing a snapshot or archive, or right after a rename.

    The first write and rename are those of the empty store's creation.
    """
    puts, cancels = _kill_child(home, crash_in, crash_at, kill_after=10_000)
    _check_acknowledged(home, puts, cancels)
    with Store(home, EAGER) as store:  # the next writer compacts over the leftovers
        [job] = add_jobs(store, ["next"])
        store.update(job.id, finish)
        store.compact()
    _check_acknowledged(home, puts, cancels)
    assert not list((home / "store").glob(".*.tmp"))


def test_torn_tail_is_dropped_and_cut_by_the_next_writer(home: Path) -> None:
    store = Store(home)
    jobs = add_jobs(store, ["a", "b"])
    store.close()
    [journal] = (home / "store").glob("journal-*.jsonl")
    good = journal.read_bytes()
    for tail in (b'0badc0de {"jobs":[', b'deadbeef {"jobs":[]}\n\x00\x00'):
        journal.write_bytes(good + tail)
        with Store(home) as again:
            assert again.jobs() == jobs
        assert journal.read_bytes() == good + tail  # a reader changes nothing
    with Store(home) as again:
        [third] = add_jobs(again, ["c"])
    assert journal.read_bytes().startswith(good)
    assert tail not in journal.read_bytes()
    with Store(home) as again:
        assert again.jobs() == [*jobs, third]


def test_commits_without_fsync_are_seen_at_once_and_synced_later(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    store = Store(home)
    [job] = add_jobs(store, ["a"])
    assert len(synced) == 1
    reader = Store(home)
    running = store.update(job.id, lambda j: j.evolve(reason="r5"), durable=False)
    assert len(synced) == 1  # no fsync: written, not synced
    assert reader.get(job.id) == running  # yet every process sees it at once
    store.sync()
    assert len(synced) == 2
    store.sync()
    assert len(synced) == 2  # nothing left to sync
    with store.transaction(durable=False) as txn:
        txn.put(running.evolve(reason="r6"))
    with store.transaction() as txn:  # a durable commit syncs the earlier one too
        txn.put(running.evolve(reason="r7"))
    assert len(synced) == 3
    store.update(job.id, lambda j: j.evolve(reason="r8"), durable=False)
    store.close()  # close syncs
    assert len(synced) == 4
    assert reader.get(job.id).reason == "r8"
    reader.close()
    with Store(home) as again:
        assert again.get(job.id).reason == "r8"


def test_a_hole_left_by_a_machine_crash_is_skipped(home: Path) -> None:
    """Blocks of an unsynced journal that never reached the disk read as NUL bytes, and
    later blocks may have: the lines they spoil are skipped, the rest is kept."""
    with Store(home) as store:
        a, b, c = (add_jobs(store, [name])[0] for name in "abc")
    [journal] = (home / "store").glob("journal-*.jsonl")
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[3] == b""
    hole = lines[1][:40] + b"\0" * (len(lines[1]) - 40)
    journal.write_bytes(b"\n".join([lines[0], hole, lines[2], b""]))
    before = store_files(home)
    with Store(home) as again:
        assert again.jobs() == [a, c]
        assert store_files(home) == before  # a reader changes nothing
        [d] = add_jobs(again, ["d"])
    with Store(home) as again:
        assert again.jobs() == [a, c, d]
        with pytest.raises(UnknownJobError):
            again.get(b.id)  # lost with its line, as a commit never synced may be


def test_refresh_reports_others_commits_whichever_read_applied_them(home: Path) -> None:
    """The engine refreshes once per pass and skips the pass when nothing changed: a
    submit that another read (between two passes) caught up with must still count."""
    engine = Store(home)
    other = Store(home)
    assert engine.refresh() is False
    [job] = add_jobs(other, ["submitted"])
    assert engine.jobs() == [job]  # this read catches up with the submit...
    assert engine.refresh() is True  # ...and the next refresh still reports it
    assert engine.refresh() is False
    engine.update(job.id, lambda j: j.evolve(reason="own"))
    assert engine.refresh() is False  # its own commits do not count
    other.update(job.id, lambda j: j.evolve(reason="theirs"))
    assert engine.refresh() is True
    engine.close()
    other.close()


def test_get_many_reads_in_the_order_asked(home: Path) -> None:
    with Store(home) as store:
        jobs = add_jobs(store, ["a", "b", "c"])
        assert store.get_many([jobs[2].id, jobs[0].id]) == [jobs[2], jobs[0]]
        assert store.get_many([]) == []
        with pytest.raises(UnknownJobError):
            store.get_many([jobs[0].id, 999])


# --------------------------------------------------------------------------- corruption


def test_corrupt_snapshot_is_reported_and_kept(home: Path) -> None:
    store = Store(home)
    add_jobs(store, ["a"])
    store.compact()
    store.close()
    snapshot = home / "store" / "snapshot.json"
    good = snapshot.read_bytes()
    bad_snapshots = [
        good[: len(good) // 2],
        b"\x00\xff not json",
        good.replace(b'"format":1', b'"format":99'),
        good.replace(b'"state":"PENDING"', b'"state":"EXPLODED"'),
    ]
    for bad in bad_snapshots:
        snapshot.write_bytes(bad)
        before = store_files(home)
        with pytest.raises(StoreCorruptError) as err:
            Store(home)
        assert str(snapshot) in str(err.value)
        assert "kept as-is for recovery" in str(err.value)
        assert store_files(home) == before


def test_corrupt_middle_journal_line_is_reported_and_kept(home: Path) -> None:
    store = Store(home)
    add_jobs(store, ["a"])
    other = Store(home)
    add_jobs(other, ["b"])
    add_jobs(other, ["c"])
    [journal] = (home / "store").glob("journal-*.jsonl")
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"b"', b'"B"')  # checksum no longer matches
    journal.write_bytes(b"\n".join(lines))
    before = store_files(home)
    with pytest.raises(StoreCorruptError, match=str(journal)) as err:
        Store(home)
    assert "damaged" in str(err.value)
    assert store_files(home) == before
    # A store that had not read those lines yet stops at its next write.
    with pytest.raises(StoreCorruptError, match=str(journal)):
        add_jobs(store, ["d"])
    assert store_files(home) == before


def test_missing_or_damaged_archive_is_reported(home: Path) -> None:
    store = Store(home, EAGER)
    [job] = add_jobs(store, ["a"])
    store.update(job.id, finish)
    store.compact()
    store.close()
    archives = list((home / "store").glob("archive-*.json"))
    for archive in archives:
        archive.write_bytes(b"{ damaged")
    before = store_files(home)
    # The archive is read only when needed.
    with Store(home) as again, pytest.raises(StoreCorruptError, match=r"archive-.*not valid JSON"):
        again.get(job.id)
    assert store_files(home) == before
    for archive in archives:
        archive.unlink()
    with Store(home) as again, pytest.raises(StoreCorruptError, match="is missing"):
        again.jobs()


def test_missing_snapshot_next_to_a_journal_is_corruption(home: Path) -> None:
    store = Store(home)
    add_jobs(store, ["a"])
    store.close()
    (home / "store" / "snapshot.json").unlink()
    before = store_files(home)
    with pytest.raises(StoreCorruptError, match=r"snapshot\.json: it is missing"):
        Store(home)
    assert store_files(home) == before


def test_job_that_no_longer_validates_names_the_file(home: Path) -> None:
    store = Store(home)
    [job] = add_jobs(store, ["a"])
    store.compact()
    store.close()
    snapshot = home / "store" / "snapshot.json"
    snapshot.write_bytes(snapshot.read_bytes().replace(b'"attempts":0', b'"attempts":"many"'))
    with Store(home) as again, pytest.raises(StoreCorruptError, match=f"{snapshot}.*job {job.id}"):
        again.get(job.id)


def test_snapshot_rewritten_by_plain_tinydb_still_opens(home: Path) -> None:
    store = Store(home)
    jobs = add_jobs(store, ["a", "b"])
    store.compact()
    store.close()
    snapshot = home / "store" / "snapshot.json"
    snapshot.write_text(json.dumps(json.loads(snapshot.read_text())))  # one line, spaces
    with Store(home) as again:
        assert again.jobs() == jobs


# --------------------------------------------------------------------------- model check

_NAMES = st.sampled_from(["a", "b", "c", "d"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_NAMES, min_size=1, max_size=3)),
        st.tuples(st.just("move"), st.integers(0, 40), st.sampled_from(list(JobState))),
        st.tuples(st.just("rollback"), st.lists(_NAMES, min_size=1, max_size=2)),
        st.tuples(st.just("batch"), st.integers(0, 3)),
        st.just(("reopen",)),
        st.just(("compact",)),
    ),
    max_size=25,
)


def _mover(target: JobState, ended: float | None) -> Callable[[Job], Job]:
    return lambda job: job.transition(target, ended_at=ended)


def _adder(home: Path, names: list[str]) -> Callable[[Transaction], None]:
    def add(txn: Transaction) -> None:
        for name in names:
            txn.put(make_job(home, txn.next_job_id(), name))

    return add


def _check(store: Store, model: dict[int, Job], batches: dict[int, Batch]) -> None:
    assert store.jobs() == [model[i] for i in sorted(model)]
    assert store.jobs(active_only=True) == [
        model[i] for i in sorted(model) if model[i].state.is_active
    ]
    for job_id, job in model.items():
        assert store.get(job_id) == job
    for name in {job.name for job in model.values()} | {"zzz"}:
        ids = [i for i, j in model.items() if j.name == name]
        found = store.find_by_name(name)
        assert (found.id if found else None) == (max(ids) if ids else None)
    assert store.batches() == [batches[i] for i in sorted(batches)]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_OPS, keep=st.integers(0, 2), archive_after=st.sampled_from([0.0, 1e9]))
def test_store_matches_a_dict_model(
    ops: list[tuple[Any, ...]], keep: int, archive_after: float
) -> None:
    tuning = StoreTuning(
        compact_bytes=1,
        archive_after=archive_after,
        keep_finished=keep,
        archive_batch=1,
        max_archives=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = Store(home, tuning)
        watcher = Store(home, tuning)  # a second "process" following by catching up
        model: dict[int, Job] = {}
        batches: dict[int, Batch] = {}
        for op in ops:
            if op[0] == "add":
                for job in add_jobs(store, op[1]):
                    model[job.id] = job
            elif op[0] == "move" and model:
                job = model[sorted(model)[op[1] % len(model)]]
                target: JobState = op[2]
                if target in ALLOWED_TRANSITIONS[job.state]:
                    ended = time.time() if target.is_terminal else None
                    model[job.id] = store.update(job.id, _mover(target, ended))
            elif op[0] == "rollback":
                failed_transaction(store, _adder(home, op[1]))
            elif op[0] == "batch":
                with store.transaction() as txn:
                    ids = tuple(sorted(model)[: op[1]])
                    batch = Batch(
                        id=txn.next_batch_id(), path=None, digest="", submitted_at=0, job_ids=ids
                    )
                    txn.put_batch(batch)
                batches[batch.id] = batch
            elif op[0] == "reopen":
                store.close()
                store = Store(home, tuning)
            elif op[0] == "compact":
                store.compact()
            _check(watcher, model, batches)
        _check(store, model, batches)
        store.close()
        watcher.close()
        with Store(home, tuning) as fresh:
            _check(fresh, model, batches)
