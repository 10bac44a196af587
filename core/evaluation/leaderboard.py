"""The leaderboard: every evaluated checkpoint of a sweep, ranked on one scale.

Each job's results file keeps raw metric values; here they are normalised again across
all checkpoints of the group (a sweep is the jobs of one batch), so scores compare across
jobs. The best checkpoint of each job and of each group is marked. This module is light
(no torch, numpy or PIL): the CLI's ``loradeck results`` and the TUI's Results screen
both read through it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loradeck.core.errors import LoradeckError
from loradeck.core.evaluation.results import EvalResults, read_results, results_path
from loradeck.core.evaluation.scoring import METRICS, Candidate, best_index, combined_scores
from loradeck.core.models import Job

EVALUATION_TAG = "evaluation"
"""The tag of evaluation jobs (they are not ranked themselves)."""


@dataclass(frozen=True)
class LeaderboardRow:
    """One checkpoint of one job."""

    job_id: int | None
    job_name: str
    batch_id: int | None
    key: str
    checkpoint: Path | None
    epoch: int | None
    step: int | None
    metrics: dict[str, float | None]
    reasons: dict[str, str]
    """Why a metric has no value."""
    combined: float | None = None
    rank: int | None = None
    """1 is best within the group; None when unscored."""
    best_in_job: bool = False
    best_in_group: bool = False
    contact_sheet: Path | None = None
    errors: tuple[str, ...] = ()
    group: str = ""
    """``batch N`` for a sweep, ``job N`` for a job on its own."""


@dataclass(frozen=True)
class Leaderboard:
    """Ranked rows, the metric columns and weights used, and jobs without results."""

    rows: tuple[LeaderboardRow, ...]
    metrics: tuple[str, ...]
    weights: dict[str, float]
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    def best(self, group: str | None = None) -> LeaderboardRow | None:
        """The best row of ``group`` (of the first group when None)."""
        return next(
            (r for r in self.rows if r.best_in_group and (group is None or r.group == group)),
            None,
        )

    def sorted_by(self, column: str, *, descending: bool | None = None) -> list[LeaderboardRow]:
        """Rows sorted by ``combined``, ``job``, ``step`` or a metric; unscored rows last.

        By default a metric sorts best first (its direction), others descending."""

        def value(row: LeaderboardRow) -> Any:
            if column == "combined":
                # By rank, so that ties come out in the order the best was chosen in.
                return None if row.rank is None else (row.combined, -row.rank)
            if column == "job":
                return row.job_id or 0
            if column == "step":
                return row.step if row.step is not None else row.epoch
            return row.metrics.get(column)

        if descending is None:
            info = METRICS.get(column)
            descending = info.higher_is_better if info else True
        present = [r for r in self.rows if value(r) is not None]
        absent = [r for r in self.rows if value(r) is None]
        return sorted(present, key=value, reverse=descending) + absent


def _rows_of(results: EvalResults, group: str) -> list[LeaderboardRow]:
    rows = []
    for item in results.checkpoints:
        rows.append(
            LeaderboardRow(
                job_id=results.job_id,
                job_name=results.job_name or str(results.source),
                batch_id=results.batch_id,
                key=item.key,
                checkpoint=item.checkpoint,
                epoch=item.epoch,
                step=item.step,
                metrics={name: m.value for name, m in item.metrics.items()},
                reasons={name: m.reason for name, m in item.metrics.items() if m.reason},
                contact_sheet=item.contact_sheet,
                errors=tuple(item.errors),
                group=group,
            )
        )
    return rows


def _rank_group(rows: list[LeaderboardRow], weights: Mapping[str, float]) -> list[LeaderboardRow]:
    scores = combined_scores([r.metrics for r in rows], weights)
    ranked = sorted((s, i) for i, s in enumerate(scores) if s is not None)[::-1]
    ranks = {i: position for position, (_, i) in enumerate(ranked, start=1)}
    out = [
        replace(row, combined=score, rank=ranks.get(i))
        for i, (row, score) in enumerate(zip(rows, scores, strict=True))
    ]
    best = best_index(
        [Candidate(r.combined, r.checkpoint is not None, i) for i, r in enumerate(out)]
    )
    if best is not None:
        out[best] = replace(out[best], best_in_group=True)
    for job in {r.job_id for r in out}:
        members = [i for i, r in enumerate(out) if r.job_id == job]
        pick = best_index(
            [
                Candidate(out[i].combined, out[i].checkpoint is not None, n)
                for n, i in enumerate(members)
            ]
        )
        if pick is not None:
            out[members[pick]] = replace(out[members[pick]], best_in_job=True)
    return out


def build_leaderboard(
    results: Iterable[tuple[str, EvalResults]],
    *,
    metrics: Sequence[str],
    weights: Mapping[str, float],
    missing: Sequence[str] = (),
) -> Leaderboard:
    """Rank ``(group, results)`` pairs: rows are normalised within their group."""
    by_group: dict[str, list[LeaderboardRow]] = {}
    problems: list[str] = []
    for group, item in results:
        if item.error:
            problems.append(f"{item.job_name or item.source}: {item.error}")
        by_group.setdefault(group, []).extend(_rows_of(item, group))
    effective = {name: float(weights.get(name, 1.0)) for name in metrics}
    rows = [row for group in by_group.values() for row in _rank_group(group, effective)]
    return Leaderboard(
        rows=tuple(rows),
        metrics=tuple(metrics),
        weights=effective,
        missing=tuple(missing),
        problems=tuple(problems),
    )


def is_evaluation_job(job: Job) -> bool:
    return EVALUATION_TAG in job.spec.tags


def load_leaderboard(
    jobs: Sequence[Job],
    *,
    metrics: Sequence[str],
    weights: Mapping[str, float],
    group_by_batch: bool = True,
) -> Leaderboard:
    """The leaderboard of ``jobs`` (evaluation jobs are skipped), read from their results
    files. Jobs of one batch form a group; with ``group_by_batch=False`` all are one."""
    pairs: list[tuple[str, EvalResults]] = []
    missing: list[str] = []
    for job in jobs:
        if is_evaluation_job(job):
            continue
        path = results_path(job.job_dir)
        if not path.exists():
            missing.append(f"job {job.id} ({job.name}): not evaluated yet")
            continue
        try:
            item = read_results(path)
        except LoradeckError as err:
            missing.append(f"job {job.id} ({job.name}): {err.message}")
            continue
        group = "all"
        if group_by_batch:
            group = f"batch {job.batch_id}" if job.batch_id is not None else f"job {job.id}"
        pairs.append((group, item))
    return build_leaderboard(pairs, metrics=metrics, weights=weights, missing=missing)


# --------------------------------------------------------------------------- output


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_table(board: Leaderboard) -> str:
    """A plain-text table, best first within each group; ``*`` marks the group's best and
    ``+`` each job's best."""
    if not board.rows:
        lines = ["no evaluation results"]
        lines += [f"  {m}" for m in board.missing]
        return "\n".join(lines)
    headers = ["", "rank", "job", "checkpoint", "score", *(METRICS[m].label for m in board.metrics)]
    table: list[list[str]] = []
    groups = list(dict.fromkeys(r.group for r in board.rows))
    for group in groups:
        members = [r for r in board.sorted_by("combined") if r.group == group]
        for row in members:
            mark = "*" if row.best_in_group else "+" if row.best_in_job else ""
            table.append(
                [
                    mark,
                    str(row.rank) if row.rank is not None else "-",
                    (f"{row.job_id} {row.job_name}" if row.job_id else row.job_name)[:28],
                    row.key[:36],
                    _number(row.combined),
                    *(_number(row.metrics.get(m)) for m in board.metrics),
                ]
            )
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    for group in groups:
        best = board.best(group)
        if best is not None:
            lines.append(f"best of {group}: {best.job_name} {best.checkpoint or best.key}")
    lines += [f"not ranked: {m}" for m in board.missing]
    lines += [f"problem: {p}" for p in board.problems]
    return "\n".join(lines)


def row_json(row: LeaderboardRow) -> dict[str, Any]:
    return {
        "group": row.group,
        "rank": row.rank,
        "job_id": row.job_id,
        "job_name": row.job_name,
        "batch_id": row.batch_id,
        "key": row.key,
        "checkpoint": str(row.checkpoint) if row.checkpoint else None,
        "epoch": row.epoch,
        "step": row.step,
        "combined": row.combined,
        "metrics": row.metrics,
        "unavailable": row.reasons,
        "best_in_job": row.best_in_job,
        "best_in_group": row.best_in_group,
        "contact_sheet": str(row.contact_sheet) if row.contact_sheet else None,
        "errors": list(row.errors),
    }


def to_json(board: Leaderboard) -> str:
    """The leaderboard as JSON (rows best first within each group)."""
    data = {
        "metrics": list(board.metrics),
        "weights": board.weights,
        "rows": [row_json(r) for r in board.sorted_by("combined")],
        "missing": list(board.missing),
        "problems": list(board.problems),
    }
    return json.dumps(data, indent=2)


def to_csv(board: Leaderboard) -> str:
    """The leaderboard as CSV, one checkpoint a row, metrics as columns (empty: n/a)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "group",
            "rank",
            "job_id",
            "job_name",
            "checkpoint",
            "key",
            "epoch",
            "step",
            "combined",
            *board.metrics,
            "best_in_job",
            "best_in_group",
            "contact_sheet",
        ]
    )
    for row in board.sorted_by("combined"):
        writer.writerow(
            [
                row.group,
                row.rank or "",
                row.job_id or "",
                row.job_name,
                row.checkpoint or "",
                row.key,
                "" if row.epoch is None else row.epoch,
                "" if row.step is None else row.step,
                "" if row.combined is None else row.combined,
                *("" if row.metrics.get(m) is None else row.metrics[m] for m in board.metrics),
                int(row.best_in_job),
                int(row.best_in_group),
                row.contact_sheet or "",
            ]
        )
    return out.getvalue()
