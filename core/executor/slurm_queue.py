"""What Slurm says about loradeck's jobs, asked as rarely as possible.

:class:`SlurmQueue` keeps the answer of one ``squeue -t all -j <ids>`` for ``ttl``
seconds and asks about every watched job at once, so an engine pass over hundreds of
handed-over jobs costs one squeue. An ended job is asked once more, for its exit code
(``scontrol show job -o`` while Slurm keeps it, ``MinJobAge``; then ``sacct`` with
accounting, or ``sacct -c`` on the jobcomp file), and that answer is kept.

Thread-safe: the engine's loop polls while stop workers wait for cancellations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from loradeck.core.executor.slurm_commands import SlurmCommands
from loradeck.core.executor.slurm_states import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    SlurmJob,
    chunks,
    parse_config,
    parse_sacct,
    parse_scontrol_job,
    parse_squeue,
)

#: What Slurm says about an id it does not (or no longer) know.
UNKNOWN_ID = "Invalid job id specified"
#: How many ended jobs' final rows are kept (each is asked for only once).
ENDED_KEPT = 4096


class SlurmQueue:
    """Cached squeue answers about a set of watched Slurm jobs."""

    def __init__(
        self,
        commands: SlurmCommands,
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands = commands
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, SlurmJob] = {}
        self._rows_at = float("-inf")
        self._watched: set[str] = set()
        self._ended: dict[str, SlurmJob] = {}
        self._config: dict[str, str] | None = None

    def config(self) -> Mapping[str, str]:
        """``scontrol show config``, read once; raises with Slurm's message when
        slurmctld cannot be reached."""
        if self._config is None:
            self._config = parse_config(self.commands.run("scontrol", "show", "config"))
        return self._config

    def watch(self, ref: str) -> None:
        """Include ``ref`` in every squeue until it has ended."""
        with self._lock:
            self._watched.add(ref)

    def forget(self, ref: str) -> None:
        with self._lock:
            self._watched.discard(ref)

    def refresh(self, refs: set[str]) -> None:
        """Ask about ``refs`` and every watched job in one squeue, and keep the answer."""
        with self._lock:
            asked = refs | self._watched
        self.query(asked, remember=True)

    def cached(self, ref: str) -> SlurmJob | None:
        """The last answer about ``ref``; no Slurm call."""
        with self._lock:
            return self._ended.get(ref) or self._rows.get(ref)

    def row(self, ref: str) -> SlurmJob | None:
        """``ref``'s row from a recent squeue (asked now, with every watched job, if
        the last answer is older than ``ttl``); None when Slurm does not show it."""
        with self._lock:
            if (ended := self._ended.get(ref)) is not None:
                return ended
            if self._clock() - self._rows_at < self._ttl and ref in self._rows:
                return self._rows[ref]
            self._watched.add(ref)
            refs = set(self._watched)
        return self.query(refs, remember=True).get(ref)

    def query(self, refs: set[str], *, remember: bool = False) -> dict[str, SlurmJob]:
        """squeue's rows for ``refs``, now. ``remember`` makes them the cached answer
        (for a query of every watched job); otherwise they only update it."""
        rows: dict[str, SlurmJob] = {}
        asked_at = self._clock()
        for batch in chunks(sorted(refs, key=lambda r: (len(r), r))):
            out = self.commands.run(
                "squeue",
                "-h",
                "-t",
                "all",
                "-j",
                ",".join(batch),
                "-o",
                SQUEUE_FORMAT,
                quiet_errors=(UNKNOWN_ID,),
            )
            rows.update(parse_squeue(out))
        with self._lock:
            if remember:
                self._rows = rows
                self._rows_at = asked_at
            else:  # newer than what is kept, but not an answer about every watched job
                self._rows.update(rows)
            for ref, row in rows.items():
                if row.ended:
                    self._watched.discard(ref)
        return rows

    def mine(self) -> dict[str, SlurmJob]:
        """Every job of this user that Slurm holds (for adoption and lookups by tag)."""
        return parse_squeue(
            self.commands.run("squeue", "--me", "-h", "-t", "all", "-o", SQUEUE_FORMAT)
        )

    def final(self, row: SlurmJob) -> SlurmJob:
        """``row`` (ended) with its ``N:S`` exit code, asked once and then kept."""
        with self._lock:
            if (known := self._ended.get(row.job_id)) is not None:
                return known
        detailed = parse_scontrol_job(
            self.commands.run(
                "scontrol", "show", "job", "-o", row.job_id, quiet_errors=(UNKNOWN_ID,)
            )
        )
        if detailed is None or detailed.exit_code is None:
            detailed = self.forgotten(row.job_id)
        final = row if detailed is None else detailed
        self._keep_ended(final)
        return final

    def forgotten(self, ref: str) -> SlurmJob | None:
        """A job squeue no longer shows, from accounting or the jobcomp file; None when
        the cluster keeps neither."""
        config = self.config()
        args = ["-n", "-P", "-X", "-j", ref, "-o", SACCT_FIELDS]
        accounting = config.get("AccountingStorageType", "accounting_storage/none")
        if accounting != "accounting_storage/none":
            row = parse_sacct(self.commands.run("sacct", *args)).get(ref)
        elif config.get("JobCompType") == "jobcomp/filetxt":
            row = parse_sacct(self.commands.run("sacct", "-c", *args)).get(ref)
        else:
            return None
        if row is not None and row.ended:
            self._keep_ended(row)
        return row

    def _keep_ended(self, row: SlurmJob) -> None:
        with self._lock:
            self._ended[row.job_id] = row
            self._watched.discard(row.job_id)
            while len(self._ended) > ENDED_KEPT:
                del self._ended[next(iter(self._ended))]
