"""The durable store of one home's jobs and batches, shared by every loradeck process.

Files in ``<home>/store/`` (folder 0700, files 0600)::

    lock                   flock'd around every transaction: one writer at a time, any process
    snapshot.json          tinydb file: tables meta, batches, jobs (the working set)
    snapshot.prev.json     the snapshot before the latest compaction, for manual recovery
    journal-<gen>.jsonl    transactions committed since snapshot <gen>: a checksummed line each
    archive-<gen>.json     tinydb file (table ``archive``): finished jobs moved out of the way

A transaction appends one line to the journal and fsyncs it before it returns. When the
journal outgrows the snapshot, the committing process compacts: it moves old finished jobs
to a new archive file, writes the next snapshot atomically and starts a new journal. The
working set therefore holds active and recently finished jobs, whatever the history.

A transaction opened with ``durable=False`` skips the fsync (a few milliseconds): its line
is written at once, so every process sees it and it survives a crash of the writing
process, but a crash of the machine may lose it until the next durable commit (any
process's: an fsync covers the whole file), :meth:`Store.sync`, :meth:`Store.close` or
the kernel's own write-back a few seconds later. For bookkeeping that can be lost, or
that a durable commit follows right away (group commit).

Every process keeps the state in memory and catches up on each call by reading only the
journal bytes appended since (two ``stat`` calls when nothing changed). Readers take no
lock. Jobs are parsed into :class:`Job` only when asked for. A file that does not parse
raises :class:`StoreCorruptError` naming it; nothing is ever reset or rewritten then.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from loradeck.core.errors import StoreCorruptError, StoreError, UnknownJobError
from loradeck.core.home import ensure_private_dir
from loradeck.core.journal import (
    PREVIOUS_SNAPSHOT,
    SNAPSHOT,
    JobRecord,
    Meta,
    Record,
    StoreView,
    archive_name,
    corrupt,
    encode_record,
    fsync_dir,
    journal_name,
    load_segment,
    load_view,
    open_private,
    parse_journal_generation,
    render_tables,
    snapshot_key,
    temp_path,
    write_all,
    write_atomic,
)
from loradeck.core.models import Batch, Job

T = TypeVar("T")

_log = logging.getLogger(__name__)
_RETRIES = 10


@dataclass(frozen=True)
class StoreTuning:
    """When the store compacts and archives. The defaults suit queues of any size."""

    compact_bytes: int = 4 << 20
    """Compact once the journal holds this many bytes, or half the snapshot's size if more."""
    archive_after: float = 86_400.0
    """Seconds after its end at which a finished job leaves the working set for the archive."""
    keep_finished: int = 1_000
    """At most this many finished jobs (the newest) stay in the working set."""
    archive_batch: int = 256
    """Archive only once this many finished jobs qualify, so that archive files stay few."""
    max_archives: int = 16
    """Merge the archive files into one rather than have more than this many."""


class _StaleError(Exception):
    """Another process replaced the snapshot while this one was reading: read again."""


class Store:
    """The jobs and batches of one home; safe to use from many processes and threads.

    Reads catch up with other processes' commits first (cheaply), so they see the latest
    committed state. Changes go through :meth:`transaction` or :meth:`update`.
    """

    def __init__(self, home: Path, tuning: StoreTuning | None = None) -> None:
        """Open the store of ``home``, creating it if there is none.

        Raises :class:`StoreCorruptError` naming the file if a store file does not parse.
        """
        self.home = Path(home)
        self.tuning = tuning or StoreTuning()
        ensure_private_dir(self.home)
        self._dir = ensure_private_dir(self.home / "store")
        self._snapshot = self._dir / SNAPSHOT
        self._pid = os.getpid()
        self._state = threading.RLock()
        self._writer = threading.Lock()
        self._owner: int | None = None
        self._closed = False
        self._unsynced = False
        """A commit of this process skipped its fsync and none has been done since."""
        self._foreign = False
        """A read applied others' commits since the last :meth:`refresh`."""
        self._segments: dict[str, dict[int, JobRecord]] = {}
        self._archive: dict[int, JobRecord] | None = None
        self._archive_key: tuple[str, ...] = ()
        self._lock_fd = self._open_lock()
        try:
            if not self._snapshot.exists():
                self._create()
            self._view = self._first_view()
        except OSError as err:
            os.close(self._lock_fd)
            raise StoreError(f"{self._dir}: cannot open the store ({err})") from err
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ----------------------------------------------------------------- reads

    def get(self, job_id: int) -> Job:
        """The job ``job_id``, archived or not; :class:`UnknownJobError` if there is none."""
        return self._read(lambda view: self._job(view, job_id))

    def get_many(self, job_ids: Iterable[int]) -> list[Job]:
        """The jobs ``job_ids``, in that order, as of one moment: one catch-up for all of
        them, where a :meth:`get` per job catches up each time (two ``stat`` calls)."""
        ids = list(job_ids)
        return self._read(lambda view: [self._job(view, job_id) for job_id in ids])

    def jobs(self, *, active_only: bool = False) -> list[Job]:
        """Every job (or every job not yet finished), sorted by id."""
        return self._read(lambda view: self._jobs(view, active_only))

    def find_by_name(self, name: str) -> Job | None:
        """The newest job named exactly ``name``, or None."""
        return self._read(lambda view: self._find_named(view, name, ()))

    def batches(self) -> list[Batch]:
        """Every batch, sorted by id."""
        return self._read(
            lambda view: [view.batches[i].parse(Batch, i) for i in sorted(view.batches)]
        )

    def get_batch(self, batch_id: int) -> Batch:
        """The batch ``batch_id``; :class:`UnknownJobError` if there is none."""

        def find(view: StoreView) -> Batch:
            record = view.batches.get(batch_id)
            if record is None:
                raise UnknownJobError(f"no batch {batch_id} in this home", title="unknown batch")
            return record.parse(Batch, batch_id)

        return self._read(find)

    def refresh(self) -> bool:
        """Catch up with other processes' commits (and other Store objects'); True if
        there were any since the previous ``refresh()``, whichever read caught up with
        them. This Store's own commits do not count.

        "Since the previous refresh()", not "in this call": a caller that refreshes once
        per pass (the engine) must learn of a commit that some read in between (a
        ``jobs()`` while computing its sleep) already applied."""
        self._usable()
        self._read(_revision)
        with self._state:
            changed, self._foreign = self._foreign, False
        return changed

    @property
    def revision(self) -> tuple[int, int]:
        """(generation, journal offset): changes with every commit, by any process."""
        return self._read(_revision)

    @property
    def watch_paths(self) -> list[Path]:
        """The store folder: every commit changes a file in it."""
        return [self._dir]

    # ----------------------------------------------------------------- writes

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """An exclusive transaction, across processes, on the latest state.

        On normal exit every put is committed, and fsync'd before this returns unless
        ``durable`` is False (see the module docstring); if the body raises, nothing is
        written. Transactions do not nest: one thread holds at most one, on one Store
        object, at a time.
        """
        self._usable()
        with self._exclusive():
            with self._state:
                view = self._attempt(lambda view: view)
                txn = Transaction(self, view.next_job_id, view.next_batch_id)
            try:
                yield txn
            finally:
                txn._live = False
            with self._state:
                self._commit(txn, durable=durable)

    def update(self, job_id: int, fn: Callable[[Job], Job], *, durable: bool = True) -> Job:
        """Store ``fn(job)`` in place of job ``job_id`` in one transaction; returns it.

        Nothing is written when ``fn`` returns the job unchanged. ``durable`` as for
        :meth:`transaction`.
        """
        with self.transaction(durable=durable) as txn:
            current = txn.get(job_id)
            new = fn(current)
            if new.id != job_id:
                raise StoreError(f"updating job {job_id} returned job {new.id}; nothing stored")
            if new != current:
                txn.put(new)
        return new

    def compact(self) -> None:
        """Compact and archive now (it also happens by itself as the journal grows)."""
        self._usable()
        with self._exclusive(), self._state:
            self._attempt(lambda view: view)
            self._compact()

    def sync(self) -> None:
        """Make this process's commits made with ``durable=False`` durable now."""
        self._usable()
        with self._state:
            self._sync()

    def close(self) -> None:
        """Make every commit durable and release the files; the store cannot be used
        afterwards."""
        with self._state:
            if not self._closed:
                try:
                    self._sync()
                except StoreError:
                    _log.warning("%s: could not sync on close", self._dir, exc_info=True)
                self._closed = True
                self._view.close()
                os.close(self._lock_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading machinery

    def _read(self, fn: Callable[[StoreView], T]) -> T:
        self._usable()
        with self._state:
            try:
                return self._attempt(fn)
            except StoreCorruptError:
                if self._owner == threading.get_ident():
                    raise
        # Without the lock, a damaged line or a missing file can be a writer's work in
        # progress (cutting a torn tail, removing an old archive): look again under it.
        with self._exclusive(), self._state:
            return self._attempt(fn)

    def _attempt(self, fn: Callable[[StoreView], T]) -> T:
        for _ in range(_RETRIES):
            try:
                self._catch_up()
                return fn(self._view)
            except _StaleError:
                continue
            except OSError as err:
                raise StoreError(f"{self._dir}: cannot read the store ({err})") from err
        raise StoreError(f"{self._dir}: the store kept changing while being read; try again")

    def _catch_up(self) -> None:
        view = self._view
        try:
            key = snapshot_key(os.stat(self._snapshot))
        except FileNotFoundError as err:
            raise corrupt(self._snapshot, "the snapshot is missing") from err
        if key == view.snapshot_key:
            if view.read_journal():
                self._foreign = True
            return
        fresh = load_view(self._dir, view)
        if fresh is None:
            raise _StaleError
        self._view = fresh
        self._foreign = True
        view.close()

    def _first_view(self) -> StoreView:
        with contextlib.suppress(StoreCorruptError):  # maybe a writer's work in progress
            for _ in range(_RETRIES):
                view = load_view(self._dir, None)
                if view is not None:
                    return view
        with self._exclusive():
            view = load_view(self._dir, None)
        if view is None:
            raise StoreError(f"{self._dir}: the store kept changing while being read; try again")
        return view

    def _job(self, view: StoreView, job_id: int) -> Job:
        record = view.jobs.get(job_id)
        if record is None and view.archives and 0 < job_id < view.next_job_id:
            record = self._archive_map(view).get(job_id)
        if record is None:
            raise UnknownJobError(f"no job {job_id} in this home; `loradeck list` shows the ids")
        return record.parse(Job, job_id)

    def _jobs(self, view: StoreView, active_only: bool) -> list[Job]:
        if active_only:
            records = {i: r for i, r in view.jobs.items() if not r.terminal}
        else:
            records = dict(self._archive_map(view)) if view.archives else {}
            records.update(view.jobs)
        return [records[i].parse(Job, i) for i in sorted(records)]

    def _find_named(self, view: StoreView, name: str, exclude: Collection[int]) -> Job | None:
        best = max((i for i in view.names.get(name, ()) if i not in exclude), default=0)
        archived = view.archive_names.get(name, 0)
        if archived > best and view.archives:
            archive = self._archive_map(view)
            record = archive.get(archived)
            if (
                record is None
                or record.name != name
                or archived in view.jobs
                or archived in exclude
            ):
                # The index names an archived copy that was replaced since: look properly.
                archived = max(
                    (
                        i
                        for i, r in archive.items()
                        if r.name == name and i not in view.jobs and i not in exclude
                    ),
                    default=0,
                )
            best = max(best, archived)
        return self._job(view, best) if best else None

    def _archive_map(self, view: StoreView) -> dict[int, JobRecord]:
        """Every archived job (later archive files win), read once and kept."""
        if self._archive is not None and self._archive_key == view.archives:
            return self._archive
        segments: dict[str, dict[int, JobRecord]] = {}
        for name in view.archives:
            segment = self._segments.get(name)
            if segment is None:
                try:
                    segment = load_segment(self._dir / name)
                except FileNotFoundError as err:
                    if snapshot_key(os.stat(self._snapshot)) != view.snapshot_key:
                        raise _StaleError from err
                    raise corrupt(self._snapshot, f"its archive file {name} is missing") from err
            segments[name] = segment
        merged: dict[int, JobRecord] = {}
        for segment in segments.values():
            merged.update(segment)
        self._segments, self._archive, self._archive_key = segments, merged, view.archives
        return merged

    # ----------------------------------------------------------------- writing machinery

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone, and this process alone among all that use the store."""
        if self._owner == threading.get_ident():
            raise StoreError("a store transaction is already open in this thread; finish it first")
        with self._writer:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _sync(self) -> None:
        """fsync the journal if a commit of this process skipped it (state lock held)."""
        view = self._view
        if not self._unsynced or view.journal_fd < 0:
            return
        try:
            os.fdatasync(view.journal_fd)
        except OSError as err:
            raise StoreError(f"{view.journal_path}: cannot sync ({err.strerror})") from err
        self._unsynced = False

    def _commit(self, txn: Transaction, *, durable: bool = True) -> None:
        if not txn.changed_jobs and not txn.changed_batches:
            return
        view = self._view
        jobs = [(job, job.model_dump_json()) for job in txn.changed_jobs.values()]
        batches = [(batch, batch.model_dump_json()) for batch in txn.changed_batches.values()]
        next_job_id = max(view.next_job_id, txn.reserved_job_id)
        next_batch_id = max(view.next_batch_id, txn.reserved_batch_id)
        payload = (
            '{"jobs":['
            + ",".join(text for _, text in jobs)
            + '],"batches":['
            + ",".join(text for _, text in batches)
            + f'],"next_job_id":{next_job_id},"next_batch_id":{next_batch_id}}}'
        )
        line = encode_record(payload.encode())
        fd = view.journal_fd
        try:
            if view.torn:
                os.ftruncate(fd, view.offset)  # a crashed writer's unfinished line
            write_all(fd, line)
            if durable:
                os.fdatasync(fd)  # also makes this process's earlier unsynced lines durable
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, view.offset)
            view.seen_size = -1
            raise StoreError(
                f"{view.journal_path}: cannot save the change ({err.strerror}); nothing was stored"
            ) from err
        view.offset += len(line)
        view.seen_size = view.offset
        view.torn = False
        self._unsynced = not durable
        for job, text in jobs:
            view.set_job(job.id, JobRecord.of_job(job, text, view.journal_path))
        for batch, text in batches:
            view.set_batch(batch.id, Record(text, view.journal_path, batch))
        view.next_job_id = max(view.next_job_id, next_job_id)
        view.next_batch_id = max(view.next_batch_id, next_batch_id)
        # A commit that is most of the journal by itself (a big batch submit) leaves the
        # compaction to the next commit, so that its caller does not wait for both.
        threshold = max(self.tuning.compact_bytes, view.snapshot_bytes // 2)
        if view.offset >= threshold and 2 * len(line) <= view.offset:
            try:
                self._compact()
            except OSError as err:
                # The change is durable in the journal; compaction is retried next commit.
                _log.warning("%s: compaction failed (%s); will retry", self._dir, err)

    def _compact(self) -> None:
        """Archive old finished jobs, write the next snapshot, start a new journal."""
        view = self._view
        generation = view.generation + 1
        moving = self._archivable(view)
        archives, names = view.archives, view.archive_names
        contents: dict[int, JobRecord] = moving
        if moving:
            segment = archive_name(generation)
            if len(archives) >= self.tuning.max_archives:
                contents = {i: r for i, r in self._archive_map(view).items() if i not in view.jobs}
                contents.update(moving)
                archives, names = (segment,), {}
            else:
                archives, names = (*archives, segment), dict(names)
            for doc_id in sorted(contents):
                names[contents[doc_id].name] = doc_id
            rows = [(i, contents[i].text) for i in sorted(contents)]
            write_atomic(self._dir / segment, render_tables([("archive", rows)]))
        meta = view.meta(generation=generation, archives=archives, archive_names=names)
        data = render_tables(
            [
                ("meta", [(1, meta.to_json())]),
                ("batches", [(i, view.batches[i].text) for i in sorted(view.batches)]),
                ("jobs", [(i, view.jobs[i].text) for i in sorted(view.jobs) if i not in moving]),
            ]
        )
        journal = self._dir / journal_name(generation)
        fd = open_private(journal, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC)
        try:
            os.fsync(fd)
            fsync_dir(self._dir)
            self._keep_previous()
            write_atomic(self._snapshot, data)
        except BaseException:
            os.close(fd)
            raise
        # Committed: switch this process's view to the new generation in place.
        previous_archives = view.archives
        for doc_id in moving:
            view.drop_job(doc_id)
        view.close()
        view.journal_fd, view.journal_path = fd, journal
        view.generation, view.archives, view.archive_names = generation, archives, names
        view.snapshot_key = snapshot_key(os.stat(self._snapshot))
        view.snapshot_bytes = len(data)
        view.offset = view.seen_size = 0
        view.torn = False
        self._unsynced = False  # the new snapshot, fsync'd, holds every commit
        if self._archive is not None and moving:
            kept = {} if len(archives) == 1 else dict(self._segments)
            self._segments = {**kept, archives[-1]: contents}
        self._remove_stale(generation, {*archives, *previous_archives})

    def _archivable(self, view: StoreView) -> dict[int, JobRecord]:
        tuning = self.tuning
        cutoff = time.time() - tuning.archive_after
        finished = sorted((i for i, r in view.jobs.items() if r.terminal), reverse=True)
        moving = {
            i: view.jobs[i]
            for rank, i in enumerate(finished)
            if rank >= tuning.keep_finished or view.jobs[i].ended <= cutoff
        }
        return moving if len(moving) >= max(1, tuning.archive_batch) else {}

    def _keep_previous(self) -> None:
        """Keep the snapshot about to be replaced, as the last good one before it."""
        previous = self._dir / PREVIOUS_SNAPSHOT
        tmp = temp_path(previous)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with contextlib.suppress(OSError):  # a nicety: not worth failing a compaction for
            os.link(self._snapshot, tmp)
            os.replace(tmp, previous)

    def _remove_stale(self, generation: int, archives: set[str]) -> None:
        """Delete what neither the snapshot nor the previous one needs (lock held)."""
        for entry in os.scandir(self._dir):
            name = entry.name
            journal = parse_journal_generation(name)
            stale = (
                (journal is not None and journal not in (generation, generation - 1))
                or (name.startswith("archive-") and name not in archives)
                or (name.startswith(".") and name.endswith(".tmp"))
            )
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    # ----------------------------------------------------------------- setup

    def _open_lock(self) -> int:
        try:
            return open_private(self._dir / "lock", os.O_RDWR | os.O_CREAT)
        except OSError as err:
            raise StoreError(f"{self._dir}: cannot open the store ({err.strerror})") from err

    def _create(self) -> None:
        with self._exclusive():
            if self._snapshot.exists():
                return
            leftovers = sorted(
                entry.name
                for entry in os.scandir(self._dir)
                if entry.name.startswith(("journal-", "archive-", "snapshot"))
                and entry.stat().st_size > 0
            )
            if leftovers:
                raise corrupt(
                    self._snapshot, f"it is missing, yet the folder holds {', '.join(leftovers)}"
                )
            fd = open_private(self._dir / journal_name(1), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            meta = Meta(generation=1, next_job_id=1, next_batch_id=1, archives=(), archive_names={})
            tables = [("meta", [(1, meta.to_json())]), ("batches", []), ("jobs", [])]
            write_atomic(self._snapshot, render_tables(tables))

    def _usable(self) -> None:
        if self._closed:
            raise StoreError(f"{self._dir}: this store was closed")
        if os.getpid() != self._pid:
            # A forked child shares the parent's open files, lock included: reopen them.
            self._pid = os.getpid()
            self._state = threading.RLock()
            self._writer = threading.Lock()
            self._owner = None
            self._lock_fd = self._open_lock()
            self._view.close()
            self._view.snapshot_key = ()


def _revision(view: StoreView) -> tuple[int, int]:
    return (view.generation, view.offset)


class Transaction:
    """One all-or-nothing change, from :meth:`Store.transaction`; usable only inside it."""

    def __init__(self, store: Store, next_job_id: int, next_batch_id: int) -> None:
        self._store = store
        self._live = True
        self.changed_jobs: dict[int, Job] = {}
        self.changed_batches: dict[int, Batch] = {}
        self.reserved_job_id = next_job_id
        """The next id to hand out: past every stored or reserved one."""
        self.reserved_batch_id = next_batch_id

    def _check(self) -> None:
        if not self._live:
            raise StoreError("this transaction is over; open a new one with store.transaction()")

    def get(self, job_id: int) -> Job:
        """The job as this transaction sees it; :class:`UnknownJobError` if there is none."""
        self._check()
        job = self.changed_jobs.get(job_id)
        return job if job is not None else self._store.get(job_id)

    def jobs(self, *, active_only: bool = False) -> list[Job]:
        """Every job (or every unfinished one) as this transaction sees them, by id."""
        self._check()
        jobs = {job.id: job for job in self._store.jobs(active_only=active_only)}
        for job_id, job in self.changed_jobs.items():
            if active_only and job.state.is_terminal:
                jobs.pop(job_id, None)
            else:
                jobs[job_id] = job
        return [jobs[i] for i in sorted(jobs)]

    def find_by_name(self, name: str) -> Job | None:
        """The newest job named exactly ``name`` as this transaction sees it, or None."""
        self._check()
        store = self._store
        found = store._read(lambda view: store._find_named(view, name, self.changed_jobs))
        for job in self.changed_jobs.values():
            if job.spec.name == name and (found is None or job.id > found.id):
                found = job
        return found

    def batches(self) -> list[Batch]:
        """Every batch as this transaction sees them, by id."""
        self._check()
        batches = {batch.id: batch for batch in self._store.batches()}
        batches.update(self.changed_batches)
        return [batches[i] for i in sorted(batches)]

    def next_job_id(self) -> int:
        """A new job id, never used before (ids only grow)."""
        self._check()
        self.reserved_job_id += 1
        return self.reserved_job_id - 1

    def next_batch_id(self) -> int:
        """A new batch id, never used before."""
        self._check()
        self.reserved_batch_id += 1
        return self.reserved_batch_id - 1

    def put(self, job: Job) -> None:
        """Insert or replace ``job`` (by its id) when the transaction commits."""
        self._check()
        if not isinstance(job, Job):
            raise TypeError(f"put() takes a Job, not {type(job).__name__}")
        self.changed_jobs[job.id] = job
        self.reserved_job_id = max(self.reserved_job_id, job.id + 1)

    def put_batch(self, batch: Batch) -> None:
        """Insert or replace ``batch`` (by its id) when the transaction commits."""
        self._check()
        if not isinstance(batch, Batch):
            raise TypeError(f"put_batch() takes a Batch, not {type(batch).__name__}")
        self.changed_batches[batch.id] = batch
        self.reserved_batch_id = max(self.reserved_batch_id, batch.id + 1)
