"""The store's on-disk format, and reading it back into memory.

:mod:`loradeck.core.store` builds transactions, compaction and archiving on these pieces.

* A *journal* is an append-only file of committed transactions, one line each:
  ``<crc32 of the payload, 8 hex digits> <payload: one JSON object>\\n``. A crash can leave
  an unfinished last line (a *torn tail*); that is normal and is dropped. A damaged line
  with whole lines after it is corruption, unless it holds NUL bytes: no writer ever
  writes one, so they are blocks that a crash of the machine left unwritten while later
  ones reached the disk (some filesystems write an unsynced file out of order). Only
  commits made without fsync (``durable=False``) can be lost that way; such a *hole* is
  skipped.
* A *table file* is a tinydb database (``{"table": {"doc id": {...}}}``) written one row a
  line, so that it is read without building every row at once, and replaced atomically
  (temporary file, fsync, rename, fsync of the folder). Any valid tinydb JSON file is
  read too, more slowly.
* A :class:`StoreView` is what one process knows: a snapshot plus the journal read since.
  Rows stay JSON text until asked for, so that opening a big store is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeGuard, TypeVar

import pydantic
from pydantic import BaseModel

from loradeck.core.errors import StoreCorruptError, StoreError
from loradeck.core.models import TERMINAL_STATES, Batch, Job, JobState
from loradeck.core.validation import pydantic_problems

T = TypeVar("T")

_log = logging.getLogger(__name__)

FILE_MODE = 0o600
PREVIOUS_SNAPSHOT = "snapshot.prev.json"

_TABLE_HEADER = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)":\{\Z')
_ROW_KEY = re.compile(r'"([0-9]{1,18})":')
_TABLE_CLOSERS = ("}", "},")


def corrupt(path: Path, what: str) -> StoreCorruptError:
    """The error for an unreadable store file: names it, and says it was left untouched."""
    hint = f"To start afresh, move the folder {path.parent} aside."
    previous = path.parent / PREVIOUS_SNAPSHOT
    if previous.exists() and path.name != PREVIOUS_SNAPSHOT:
        hint += f" {previous} is the snapshot before the latest compaction."
    return StoreCorruptError(
        f"{path}: {what}. loradeck changed nothing: the file is kept as-is for recovery. {hint}"
    )


# --------------------------------------------------------------------------- plain files


def open_private(path: Path, flags: int) -> int:
    """Open (creating if asked) a file that only its owner may read, whatever the umask."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        if flags & (os.O_WRONLY | os.O_RDWR) and os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, or fewer where the file ends first."""
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """A whole file and the status of the very file read (it may be replaced meanwhile)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        return read_all(fd, status.st_size, 0), status
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (new, renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    tmp = temp_path(path)
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- journal


def encode_record(payload: bytes) -> bytes:
    """One journal line for ``payload`` (a JSON object without raw newlines)."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of a journal line, or None if the line is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    payload = line[9:]
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass(frozen=True)
class JournalRecord:
    """One committed transaction read back from a journal."""

    start: int
    """Byte offset of its line in the journal."""
    end: int
    """Byte offset just past its line."""
    body: dict[str, Any]


@dataclass(frozen=True)
class JournalScan:
    """The whole, valid lines at the start of some journal bytes."""

    records: list[JournalRecord]
    torn: bool
    """Bytes follow the last valid line: the unfinished tail of an interrupted write."""
    holes: int = 0
    """Damaged lines holding NUL bytes that were skipped (see the module docstring)."""


def scan_journal(data: bytes, path: Path, base: int) -> JournalScan:
    """Read the lines in ``data`` (the journal from offset ``base`` on).

    Damaged lines at the end are a torn tail; a damaged line followed by a valid one is
    corruption (:class:`StoreCorruptError`), unless it holds NUL bytes (a hole, skipped).
    """
    records: list[JournalRecord] = []
    damaged_at: int | None = None
    holes = unresolved = 0  # NUL lines: holes once a valid line follows, else the tail
    pos = 0
    end = 0
    while (newline := data.find(b"\n", pos)) >= 0:
        line = data[pos:newline]
        body = _decode_line(line)
        if body is None:
            if damaged_at is None and b"\0" in line:
                unresolved += 1
            elif damaged_at is None:
                damaged_at = pos
        elif damaged_at is not None:
            raise corrupt(
                path,
                f"the journal line at byte {base + damaged_at} is damaged "
                "(bad checksum or JSON) and valid lines follow it",
            )
        else:
            records.append(JournalRecord(base + pos, base + newline + 1, body))
            end = newline + 1
            holes, unresolved = holes + unresolved, 0
        pos = newline + 1
    return JournalScan(records, torn=end < len(data), holes=holes)


# --------------------------------------------------------------------------- table files


def render_tables(tables: Sequence[tuple[str, Iterable[tuple[int, str]]]]) -> bytes:
    """A tinydb JSON file, one row a line; rows are (doc id, the row as JSON text)."""
    blocks = []
    for name, rows in tables:
        lines = [f'"{doc_id}":{text}' for doc_id, text in rows]
        body = ",\n".join(lines) + "\n" if lines else ""
        blocks.append(f'"{name}":{{\n{body}}}')
    return ("{\n" + ",\n".join(blocks) + "\n}\n").encode()


class _LayoutMismatchError(Exception):
    """The file is not laid out one row a line (it may still be valid JSON)."""


RowConverter = Callable[[str, int, str, dict[str, Any]], T]
"""(table, doc id, the row as JSON text, the row parsed) -> what to keep of the row."""


def parse_tables(data: bytes, path: Path, convert: RowConverter[T]) -> dict[str, dict[int, T]]:
    """Read a tinydb JSON file; ``convert`` raises ValueError for a row it cannot accept."""
    try:
        return _parse_lines(data, path, convert)
    except _LayoutMismatchError:
        return _parse_whole(data, path, convert)


def _converted(
    convert: RowConverter[T], path: Path, table: str, doc_id: int, text: str, row: dict[str, Any]
) -> T:
    try:
        return convert(table, doc_id, text, row)
    except ValueError as err:
        raise corrupt(path, f"table {table!r}, row {doc_id}: {err}") from err


def _parse_lines(data: bytes, path: Path, convert: RowConverter[T]) -> dict[str, dict[int, T]]:
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError as err:
        raise _LayoutMismatchError from err
    if len(lines) < 3 or lines[0] != "{" or lines[-2:] != ["}", ""]:
        raise _LayoutMismatchError
    tables: dict[str, dict[int, T]] = {}
    last = len(lines) - 2
    i = 1
    while i < last:
        header = _TABLE_HEADER.match(lines[i])
        if header is None or header.group(1) in tables:
            raise _LayoutMismatchError
        table = header.group(1)
        rows: dict[int, T] = {}
        i += 1
        while i < last and lines[i] not in _TABLE_CLOSERS:
            line = lines[i]
            key = _ROW_KEY.match(line)
            if key is None:
                raise _LayoutMismatchError
            i += 1
            row_is_last = i < last and lines[i] in _TABLE_CLOSERS
            text = line[key.end() :]
            if row_is_last == text.endswith(","):
                raise _LayoutMismatchError
            text = text if row_is_last else text[:-1]
            try:
                row = json.loads(text)
            except ValueError as err:
                raise _LayoutMismatchError from err
            doc_id = int(key.group(1))
            if not isinstance(row, dict) or doc_id in rows:
                raise _LayoutMismatchError
            rows[doc_id] = _converted(convert, path, table, doc_id, text, row)
        if i >= last or (lines[i] == "}") != (i == last - 1):
            raise _LayoutMismatchError
        tables[table] = rows
        i += 1
    return tables


def _parse_whole(data: bytes, path: Path, convert: RowConverter[T]) -> dict[str, dict[int, T]]:
    try:
        document = json.loads(data)
    except ValueError as err:
        raise corrupt(path, f"not valid JSON ({err})") from err
    if not isinstance(document, dict):
        raise corrupt(path, "not a tinydb database (the top level is not an object)")
    tables: dict[str, dict[int, T]] = {}
    for table, rows in document.items():
        if not isinstance(rows, dict):
            raise corrupt(path, f"table {table!r} is not an object")
        converted: dict[int, T] = {}
        for key, row in rows.items():
            if not (key.isascii() and key.isdigit()) or not isinstance(row, dict):
                raise corrupt(path, f"table {table!r}: row {key!r} is not a document")
            text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
            converted[int(key)] = _converted(convert, path, table, int(key), text, row)
        tables[table] = converted
    return tables


# --------------------------------------------------------------------------- rows in memory

FORMAT = 1
"""The snapshot format this code writes and reads."""
SNAPSHOT = "snapshot.json"
TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
_STATES = frozenset(state.value for state in JobState)
_ARCHIVE_NAME = re.compile(r"archive-[0-9]{8}\.json\Z")
_JOURNAL_NAME = re.compile(r"journal-([0-9]{8})\.jsonl\Z")

M = TypeVar("M", bound=BaseModel)


def journal_name(generation: int) -> str:
    return f"journal-{generation:08d}.jsonl"


def parse_journal_generation(name: str) -> int | None:
    """The generation of a journal file name, or None if it is not one."""
    match = _JOURNAL_NAME.match(name)
    return int(match.group(1)) if match else None


def archive_name(generation: int) -> str:
    return f"archive-{generation:08d}.json"


def snapshot_key(status: os.stat_result) -> tuple[int, ...]:
    """Changes whenever the snapshot is replaced (a new inode, new times)."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


class Record(Generic[M]):
    """One stored row: its JSON text, the file it came from, and its model once parsed."""

    __slots__ = ("model", "source", "text")

    def __init__(self, text: str, source: Path, model: M | None = None) -> None:
        self.text = text
        self.source = source
        self.model = model

    def parse(self, cls: type[M], doc_id: int) -> M:
        """The row as a model; parsed once, on first use."""
        model = self.model
        if model is None:
            try:
                model = cls.model_validate_json(self.text)
            except pydantic.ValidationError as err:
                what = f"{cls.__name__.lower()} {doc_id}"
                problems = "; ".join(pydantic_problems(err, what))
                raise corrupt(
                    self.source, f"a row does not fit this version of loradeck: {problems}"
                ) from err
            self.model = model
        return model

    @classmethod
    def of_row(cls, doc_id: int | None, text: str, row: dict[str, Any], source: Path) -> Record[M]:
        """A row read from a file; ValueError if its id is missing or not its key."""
        row_id = row.get("id")
        if not _is_int(row_id) or row_id < 1 or (doc_id is not None and row_id != doc_id):
            raise ValueError(f"its id {row_id!r} is not a positive number matching its key")
        return cls(text, source)


class JobRecord(Record[Job]):
    """A job row, with what lists and compaction need without parsing it."""

    __slots__ = ("ended", "name", "state")

    def __init__(
        self,
        text: str,
        source: Path,
        *,
        state: str,
        name: str,
        ended: float,
        model: Job | None = None,
    ) -> None:
        super().__init__(text, source, model)
        self.state = state
        self.name = name
        self.ended = ended
        """When it finished (when it was created if it has no end time)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def of_job(cls, job: Job, text: str, source: Path) -> JobRecord:
        ended = job.ended_at if job.ended_at is not None else job.created_at
        return cls(text, source, state=job.state.value, name=job.spec.name, ended=ended, model=job)

    @classmethod
    def of_row(cls, doc_id: int | None, text: str, row: dict[str, Any], source: Path) -> JobRecord:
        Record.of_row(doc_id, text, row, source)
        state = row.get("state")
        spec = row.get("spec")
        name = spec.get("name") if isinstance(spec, dict) else None
        if state not in _STATES:
            raise ValueError(f"unknown job state {state!r}")
        if not isinstance(name, str):
            raise ValueError("the job has no name")
        ended = row.get("ended_at")
        if not isinstance(ended, int | float):
            ended = row.get("created_at")
        return cls(
            text,
            source,
            state=str(state),
            name=name,
            ended=float(ended) if isinstance(ended, int | float) else 0.0,
        )


@dataclass(frozen=True)
class Meta:
    """The ``meta`` row of a snapshot."""

    generation: int
    """Counts compactions; names the journal that goes with the snapshot."""
    next_job_id: int
    next_batch_id: int
    archives: tuple[str, ...]
    """Archive files, oldest first; a later one wins for a job found in two."""
    archive_names: dict[str, int]
    """Job name -> newest archived job id of that name (for ``find_by_name``)."""

    def to_json(self) -> str:
        return _dumps(
            {
                "format": FORMAT,
                "generation": self.generation,
                "next_job_id": self.next_job_id,
                "next_batch_id": self.next_batch_id,
                "archives": list(self.archives),
                "archive_names": self.archive_names,
            }
        )

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Meta:
        if row.get("format") != FORMAT:
            raise ValueError(
                f"store format {row.get('format')!r}, but this loradeck reads format {FORMAT}"
            )
        generation, next_job, next_batch = (
            row.get("generation"),
            row.get("next_job_id"),
            row.get("next_batch_id"),
        )
        archives = row.get("archives")
        names = row.get("archive_names")
        if not (_is_int(generation) and _is_int(next_job) and _is_int(next_batch)):
            raise ValueError("generation and next ids must be whole numbers")
        if not isinstance(archives, list) or not all(
            isinstance(a, str) and _ARCHIVE_NAME.match(a) for a in archives
        ):
            raise ValueError("archives must list archive-<generation>.json files")
        if not isinstance(names, dict) or not all(_is_int(v) for v in names.values()):
            raise ValueError("archive_names must map job names to ids")
        return cls(generation, next_job, next_batch, tuple(archives), names)


# --------------------------------------------------------------------------- views


class StoreView:
    """What one process knows of the store: a snapshot plus the journal read since."""

    def __init__(
        self,
        directory: Path,
        meta: Meta,
        key: tuple[int, ...],
        snapshot_bytes: int,
        jobs: dict[int, JobRecord],
        batches: dict[int, Record[Batch]],
        journal_fd: int,
    ) -> None:
        self.generation = meta.generation
        self.next_job_id = meta.next_job_id
        self.next_batch_id = meta.next_batch_id
        self.archives = meta.archives
        self.archive_names = meta.archive_names
        self.snapshot_key = key
        self.snapshot_bytes = snapshot_bytes
        self.jobs = jobs
        self.batches = batches
        self.names: dict[str, set[int]] = {}
        for doc_id, record in jobs.items():
            self.names.setdefault(record.name, set()).add(doc_id)
        self.journal_path = directory / journal_name(meta.generation)
        self.journal_fd = journal_fd
        self.offset = 0
        """End of the last whole, valid journal line read."""
        self.seen_size = 0
        """The journal's size when last read: an unchanged size needs no read."""
        self.torn = False
        """Bytes follow ``offset``: a torn tail that the next writer truncates."""

    def meta(self, **changes: Any) -> Meta:
        fields: dict[str, Any] = {
            "generation": self.generation,
            "next_job_id": self.next_job_id,
            "next_batch_id": self.next_batch_id,
            "archives": self.archives,
            "archive_names": self.archive_names,
        }
        return Meta(**(fields | changes))

    def set_job(self, doc_id: int, record: JobRecord) -> None:
        old = self.jobs.get(doc_id)
        if old is not None:
            if old.name != record.name:
                self._unname(old.name, doc_id)
            if record.model is None and old.text == record.text:
                record.model = old.model
        self.names.setdefault(record.name, set()).add(doc_id)
        self.jobs[doc_id] = record
        self.next_job_id = max(self.next_job_id, doc_id + 1)

    def drop_job(self, doc_id: int) -> None:
        self._unname(self.jobs.pop(doc_id).name, doc_id)

    def _unname(self, name: str, doc_id: int) -> None:
        ids = self.names.get(name)
        if ids is not None:
            ids.discard(doc_id)
            if not ids:
                del self.names[name]

    def set_batch(self, doc_id: int, record: Record[Batch]) -> None:
        self.batches[doc_id] = record
        self.next_batch_id = max(self.next_batch_id, doc_id + 1)

    def read_journal(self) -> bool:
        """Apply the lines appended since the last read; True if there were any."""
        size = os.fstat(self.journal_fd).st_size
        if size == self.seen_size:
            return False
        data = read_all(self.journal_fd, size - self.offset, self.offset)
        scan = scan_journal(data, self.journal_path, self.offset)
        for record in scan.records:
            self._apply(record)
            self.offset = record.end
        self.seen_size = size
        self.torn = scan.torn
        if scan.holes:
            _log.warning(
                "%s: skipped %d line(s) that a crash of the machine left unwritten "
                "(commits made without fsync)",
                self.journal_path,
                scan.holes,
            )
        return bool(scan.records)

    def _apply(self, record: JournalRecord) -> None:
        body = record.body
        jobs, batches = body.get("jobs"), body.get("batches")
        next_job_id, next_batch_id = body.get("next_job_id"), body.get("next_batch_id")
        try:
            if not (isinstance(jobs, list) and isinstance(batches, list)):
                raise ValueError("it lacks its jobs and batches lists")
            if not (_is_int(next_job_id) and _is_int(next_batch_id)):
                raise ValueError("it lacks its next ids")
            for row in jobs:
                job = JobRecord.of_row(None, _dumps(row), row, self.journal_path)
                self.set_job(row["id"], job)
            for row in batches:
                batch: Record[Batch] = Record.of_row(None, _dumps(row), row, self.journal_path)
                self.set_batch(row["id"], batch)
            self.next_job_id = max(self.next_job_id, next_job_id)
            self.next_batch_id = max(self.next_batch_id, next_batch_id)
        except (ValueError, AttributeError, TypeError) as err:
            raise corrupt(
                self.journal_path, f"the transaction at byte {record.start} is malformed ({err})"
            ) from err

    def close(self) -> None:
        if self.journal_fd >= 0:
            os.close(self.journal_fd)
            self.journal_fd = -1


def _snapshot_row(
    path: Path,
) -> RowConverter[JobRecord | Record[Batch] | dict[str, Any]]:
    def convert(
        table: str, doc_id: int, text: str, row: dict[str, Any]
    ) -> JobRecord | Record[Batch] | dict[str, Any]:
        if table == "jobs":
            return JobRecord.of_row(doc_id, text, row, path)
        if table == "batches":
            return Record.of_row(doc_id, text, row, path)
        return row

    return convert


def load_view(directory: Path, old: StoreView | None) -> StoreView | None:
    """Read the snapshot and its journal; None if the snapshot was replaced meanwhile.

    Parsed jobs of ``old`` whose rows did not change are kept.
    """
    path = directory / SNAPSHOT
    try:
        data, status = read_file(path)
    except FileNotFoundError as err:
        raise corrupt(path, "the snapshot is missing") from err
    except OSError as err:
        raise StoreError(f"{path}: cannot read the store ({err.strerror})") from err
    tables = parse_tables(data, path, _snapshot_row(path))
    del data
    meta_rows = list(tables.get("meta", {}).values())
    if len(meta_rows) != 1 or not isinstance(meta_rows[0], dict):
        raise corrupt(path, "the meta table must hold exactly one row")
    try:
        meta = Meta.of_row(meta_rows[0])
    except ValueError as err:
        raise corrupt(path, f"bad meta row ({err})") from err
    jobs = {k: v for k, v in tables.get("jobs", {}).items() if isinstance(v, JobRecord)}
    batches = {
        k: v
        for k, v in tables.get("batches", {}).items()
        if isinstance(v, Record) and not isinstance(v, JobRecord)
    }
    journal = directory / journal_name(meta.generation)
    try:
        fd = open_private(journal, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError as err:
        if snapshot_key(os.stat(path)) != snapshot_key(status):
            return None
        raise corrupt(path, f"its journal {journal.name} is missing") from err
    view = StoreView(directory, meta, snapshot_key(status), status.st_size, jobs, batches, fd)
    try:
        view.read_journal()
    except BaseException:
        view.close()
        raise
    if old is not None:
        for doc_id, record in view.jobs.items():
            before = old.jobs.get(doc_id)
            if before is not None and before.model is not None and before.text == record.text:
                record.model = before.model
    return view


def load_segment(path: Path) -> dict[int, JobRecord]:
    """The jobs of an archive file (FileNotFoundError if it is gone)."""

    def convert(table: str, doc_id: int, text: str, row: dict[str, Any]) -> JobRecord | None:
        return JobRecord.of_row(doc_id, text, row, path) if table == "archive" else None

    data, _ = read_file(path)
    rows = parse_tables(data, path, convert).get("archive", {})
    return {k: v for k, v in rows.items() if v is not None}
