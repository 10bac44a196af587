"""What Slurm says about jobs, parsed, and what it means for a loradeck attempt.

Pure functions over the text of ``squeue``, ``scontrol show job -o``, ``sacct -P`` and
``scontrol show config``; no I/O, so every odd line Slurm may print is easy to test.

States: a job is *active* while Slurm may still run it (PENDING, RUNNING, COMPLETING,
SUSPENDED, ...), *ended* once its state is final (COMPLETED, FAILED, CANCELLED, TIMEOUT,
OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE). Exit codes come as ``N:S``: the
exit status N of the batch script, or S, the signal that killed it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from loradeck.core.executor.base import AttemptResult, AttemptStatus

ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
"""States after which Slurm never runs the job again (it is given ``--no-requeue``)."""

#: Ended by the cluster, not by anything the job did: worth a retry.
_CLUSTER_ENDS = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REVOKED"})
_TIME_ENDS = frozenset({"TIMEOUT", "DEADLINE"})

#: Reasons Slurm gives a job whose dependency can never be satisfied.
NEVER_SATISFIED = "DependencyNeverSatisfied"
#: Reasons of a pending job that Slurm holds (``scontrol hold``, ``sbatch -H``), by its
#: owner or by an operator.
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})

#: The ``squeue -o`` fields, in order: id, state, reason, start, end, partition, nice,
#: TRES per node (GPUs), nodes, comment and, last because it may hold anything, the name.
SQUEUE_FORMAT = "%i|%T|%r|%S|%e|%P|%y|%b|%N|%k|%j"
_SQUEUE_FIELDS = SQUEUE_FORMAT.count("|") + 1

#: ``sacct -P -o`` fields for ended jobs.
SACCT_FIELDS = "jobid,state,exitcode,start,end,reason,comment,nodelist"

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job as squeue, scontrol or sacct showed it."""

    job_id: str
    state: str
    """The base state (``CANCELLED by 0`` and ``RUNNING+`` flags stripped)."""
    reason: str = ""
    """Slurm's reason (``Resources``, ``Priority``, ``Dependency``, ``TimeLimit``...);
    "" for ``None``."""
    exit_code: str | None = None
    """``N:S`` once known (squeue does not show it)."""
    start: float | None = None
    """When it started (epoch seconds); None while pending."""
    end: float | None = None
    partition: str = ""
    nice: int | None = None
    gres: str = ""
    """What it asked of each node (``gres:gpu:2``)."""
    nodes: str = ""
    comment: str = ""
    name: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def held(self) -> bool:
        """Pending and held: Slurm will not start it until it is released."""
        return self.state == "PENDING" and self.reason in HELD_REASONS

    @property
    def ran(self) -> bool:
        """Whether it ever got a node (a job cancelled while pending did not)."""
        return bool(self.nodes) and self.nodes not in ("(null)", "None assigned")

    def describe(self) -> str:
        """``"slurm: PENDING (Resources)"``, ``"slurm: RUNNING on node12"``."""
        text = f"slurm: {self.state}"
        if self.reason:
            text += f" ({self.reason})"
        if self.state == "RUNNING" and self.ran:
            text += f" on {self.nodes}"
        return text


def is_job_id(text: str) -> bool:
    """A plain Slurm job id (ASCII digits; str.isdigit also takes ``"¹"``)."""
    return bool(_DIGITS.match(text))


def base_state(text: str) -> str:
    """``"CANCELLED by 1000"`` -> ``"CANCELLED"``; ``"RUNNING+"`` -> ``"RUNNING"``."""
    word = text.strip().split(" ", 1)[0]
    return word.rstrip("+").upper()


def parse_time(text: str) -> float | None:
    """Slurm's local ``YYYY-MM-DDTHH:MM:SS``, else None (``N/A``, ``Unknown``, ``NONE``)."""
    try:
        return time.mktime(time.strptime(text.strip(), _TIME_FORMAT))
    except (ValueError, OverflowError):
        return None


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """``"3:0"`` -> ``(3, None)``; ``"0:15"`` -> ``(143, 15)`` (as bash reports a signal
    death); anything unreadable -> ``(None, None)``."""
    if not text:
        return None, None
    code, _, sig = text.strip().partition(":")
    if not _DIGITS.match(code) or (sig and not _DIGITS.match(sig)):
        return None, None
    signal = int(sig) if sig else 0
    if signal:
        return 128 + signal, signal
    return int(code), None


def _reason(text: str) -> str:
    text = text.strip()
    return "" if text in ("None", "(null)", "") else text


def _nice(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """Rows of ``squeue -h -o SQUEUE_FORMAT`` by job id; malformed lines are skipped."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        parts = line.split("|", _SQUEUE_FIELDS - 1)
        if len(parts) != _SQUEUE_FIELDS or not parts[0].strip():
            continue
        job_id, state, reason, start, end, partition, nice, gres, nodes, comment, name = parts
        state = base_state(state)
        jobs[job_id.strip()] = SlurmJob(
            job_id=job_id.strip(),
            state=state,
            reason=_reason(reason),
            start=parse_time(start) if state != "PENDING" else None,
            end=parse_time(end) if state in ENDED_STATES else None,
            partition=partition.strip(),
            nice=_nice(nice),
            gres="" if gres.strip() == "N/A" else gres.strip(),
            nodes=nodes.strip(),
            comment="" if comment == "(null)" else comment,
            name=name,
        )
    return jobs


def parse_key_values(line: str) -> dict[str, str]:
    """``Key=value Key2=value two`` (one ``scontrol show ... -o`` line) as a dict.

    A value runs to the next `` Key=``, so values with spaces (``Reason=Not responding``)
    stay whole."""
    marks = list(_KEY_RE.finditer(line))
    out: dict[str, str] = {}
    for index, mark in enumerate(marks):
        stop = marks[index + 1].start() if index + 1 < len(marks) else len(line)
        out[mark.group(1)] = line[mark.end() : stop].strip()
    return out


def parse_scontrol_job(text: str) -> SlurmJob | None:
    """The first job of ``scontrol show job -o ID``, or None if there is none."""
    for line in text.splitlines():
        fields = parse_key_values(line)
        if "JobId" in fields and "JobState" in fields:
            return _from_fields(fields)
    return None


def _from_fields(fields: Mapping[str, str]) -> SlurmJob:
    state = base_state(fields["JobState"])
    nodes = fields.get("NodeList", "")
    return SlurmJob(
        job_id=fields["JobId"],
        state=state,
        reason=_reason(fields.get("Reason", "")),
        exit_code=fields.get("ExitCode") or None,
        start=parse_time(fields.get("StartTime", "")) if state != "PENDING" else None,
        end=parse_time(fields.get("EndTime", "")) if state in ENDED_STATES else None,
        partition=fields.get("Partition", ""),
        nice=_nice(fields.get("Nice", "")),
        gres=fields.get("TresPerNode", ""),
        nodes="" if nodes == "(null)" else nodes,
        comment="" if fields.get("Comment") in (None, "(null)") else fields["Comment"],
        name=fields.get("JobName", ""),
    )


def parse_sacct(text: str) -> dict[str, SlurmJob]:
    """Rows of ``sacct -n -P -o SACCT_FIELDS`` (job allocations only: steps such as
    ``12.batch`` are skipped) by job id."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0].strip() or "." in parts[0]:
            continue
        parts += [""] * (8 - len(parts))
        job_id, state, exit_code, start, end, reason, comment, nodes = parts[:8]
        state = base_state(state)
        jobs[job_id.strip()] = SlurmJob(
            job_id=job_id.strip(),
            state=state,
            reason=_reason(reason),
            exit_code=exit_code.strip() or None,
            start=parse_time(start),
            end=parse_time(end),
            comment=comment.strip(),
            nodes="" if nodes.strip() in ("(null)", "None assigned") else nodes.strip(),
        )
    return jobs


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as a dict (``KillWait`` -> ``"5 sec"``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def seconds_of(text: str | None, default: float) -> float:
    """``"30 sec"`` -> 30.0; ``default`` when unreadable."""
    if not text:
        return default
    head = text.split(" ", 1)[0]
    try:
        return float(head)
    except ValueError:
        return default


# --------------------------------------------------------------------------- meaning


def attempt_result(job: SlurmJob, recorded: AttemptResult | None) -> AttemptResult:
    """What an attempt that Slurm shows as ``job`` means for loradeck.

    ``recorded`` is the exit status the attempt's run script wrote (the command's own
    status, more exact than Slurm's); Slurm's ``N:S`` is used when there is none (the
    script never started, or was killed before it could write).
    """
    described = job.describe()
    if not job.ended:
        return AttemptResult(AttemptStatus.RUNNING, slurm_state=job.state, reason=described)
    if recorded is not None:
        exit_code, signal = recorded.exit_code, recorded.signal
    else:
        exit_code, signal = parse_exit_code(job.exit_code)
    if job.state == "COMPLETED" and exit_code is None:
        exit_code = 0  # squeue shows no exit code, and COMPLETED means 0
    if job.state == "FAILED" and not exit_code and recorded is None:
        exit_code = 1  # Slurm could not run the script at all (its reason says why)
    result = AttemptResult(
        AttemptStatus.EXITED,
        exit_code=exit_code,
        signal=signal,
        ended_at=job.end or (recorded.ended_at if recorded is not None else None),
        launch_error=recorded.launch_error if recorded is not None else None,
        stopped=recorded.stopped if recorded is not None else False,
        slurm_state=job.state,
        reason=described,
    )
    if job.state == "CANCELLED":
        if job.reason == NEVER_SATISFIED and not job.ran:
            return replace(result, dependency_never_satisfied=True)
        return replace(result, cancelled=True)
    if job.state in _TIME_ENDS:
        return replace(result, timed_out=True)
    if job.state == "OUT_OF_MEMORY":
        return replace(result, oom=True)
    if job.state in _CLUSTER_ENDS:
        return replace(result, lost=True)
    return result


def merge(known: Mapping[str, SlurmJob], extra: Iterable[SlurmJob]) -> dict[str, SlurmJob]:
    """``known`` updated with ``extra`` (a later source wins for the same id)."""
    out = dict(known)
    for job in extra:
        out[job.job_id] = job
    return out


def chunks(ids: Iterable[str], size: int = 200) -> Iterator[list[str]]:
    """Job ids in lists of at most ``size`` (one command line each)."""
    batch: list[str] = []
    for job_id in ids:
        batch.append(job_id)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
