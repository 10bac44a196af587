"""How jobs are shown to people (compact tables) and to scripts (stable JSON)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from loradeck.core.models import Job, JobState

#: Keys of the JSON object for one job. Scripts rely on them: add keys, never rename.
JOB_JSON_KEYS = (
    "id",
    "name",
    "state",
    "reason",
    "command",
    "gpus",
    "gpu_ids",
    "vram_gb",
    "priority",
    "user",
    "project",
    "tags",
    "batch_id",
    "depends_on",
    "attempts",
    "retries",
    "failure_class",
    "exit_code",
    "timeout_s",
    "est_minutes",
    "created_at",
    "started_at",
    "ended_at",
    "output_dir",
    "log_file",
    "config_copy",
    "progress",
)


def job_to_json(job: Job) -> dict[str, Any]:
    """The stable JSON object for one job (``loradeck list/status --json``)."""
    spec = job.spec
    out: dict[str, Any] = {
        "id": job.id,
        "name": spec.name,
        "state": job.state.value,
        "reason": job.reason,
        "command": job.command,
        "gpus": spec.gpus,
        "gpu_ids": list(job.gpu_ids),
        "vram_gb": spec.vram_gb,
        "priority": spec.priority,
        "user": spec.user,
        "project": spec.project,
        "tags": list(spec.tags),
        "batch_id": job.batch_id,
        "depends_on": [
            {"job_id": dep.job_id, "condition": dep.condition.value} for dep in job.deps
        ],
        "attempts": job.attempts,
        "retries": spec.retries,
        "failure_class": job.failure_class.value if job.failure_class else None,
        "exit_code": job.exit_code,
        "timeout_s": spec.timeout,
        "est_minutes": spec.est_minutes,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "output_dir": str(job.output_dir),
        "log_file": str(job.log_file),
        "config_copy": str(job.config_copy) if job.config_copy else None,
        "progress": job.progress.model_dump(mode="json") if job.progress else None,
    }
    return out


def format_duration(seconds: float | None) -> str:
    """``"1h02m"``, ``"4m05s"``, ``"12s"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def elapsed(job: Job, now: float | None = None) -> float | None:
    """Run time of the current or last attempt."""
    if job.started_at is None:
        return None
    end = job.ended_at if job.state.is_terminal and job.ended_at else (now or time.time())
    return end - job.started_at


def one_line(text: str) -> str:
    """Control characters (newlines in a hostile name) shown as escapes in tables."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """A plain, left-aligned table with two spaces between columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.extend(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
    return "\n".join(lines)


def progress_text(job: Job) -> str:
    progress = job.progress
    if progress is None or progress.step is None:
        return "-"
    total = f"/{progress.total_steps}" if progress.total_steps else ""
    return f"{progress.step}{total}"


def jobs_table(jobs: Iterable[Job], *, now: float | None = None) -> str:
    """The compact ``loradeck list`` table."""
    now = time.time() if now is None else now
    rows: list[list[str]] = []
    for job in jobs:
        gpus = ",".join(map(str, job.gpu_ids)) if job.gpu_ids else str(job.spec.gpus)
        loss = "-"
        if job.progress is not None and job.progress.loss is not None:
            loss = f"{job.progress.loss:.4g}"
        detail = job.reason if job.state in (JobState.PENDING, JobState.HELD) else ""
        if job.state in (JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED):
            detail = job.reason
        rows.append(
            [
                str(job.id),
                _truncate(one_line(job.name), 32),
                job.state.value,
                gpus,
                str(job.spec.priority),
                _truncate(one_line(job.spec.user or "-"), 12),
                progress_text(job),
                loss,
                format_duration(elapsed(job, now)),
                _truncate(one_line(detail), 48),
            ]
        )
    headers = ["ID", "NAME", "STATE", "GPUS", "PRI", "USER", "STEP", "LOSS", "ELAPSED", "REASON"]
    return format_table(rows, headers)


def job_details(job: Job) -> str:
    """The ``loradeck status ID`` text: one ``key: value`` a line."""
    data = job_to_json(job)
    lines: list[str] = []
    for key in JOB_JSON_KEYS:
        value = data[key]
        if key in ("created_at", "started_at", "ended_at") and value is not None:
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        elif key == "depends_on":
            value = ", ".join(f"{d['condition']}:{d['job_id']}" for d in value) or "-"
        elif key == "progress" and value is not None:
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None) or "-"
        elif isinstance(value, list):
            value = ",".join(map(str, value)) or "-"
        elif value is None or value == "":
            value = "-"
        lines.append(f"{key}: {one_line(str(value))}")
    return "\n".join(lines)
