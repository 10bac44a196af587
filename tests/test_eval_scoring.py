"""Combined scores, best-checkpoint selection, the sweep leaderboard, validation loss."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loradeck.core.evaluation.errors import EvaluationError
from loradeck.core.evaluation.leaderboard import build_leaderboard, format_table, to_csv, to_json
from loradeck.core.evaluation.results import (
    CheckpointResult,
    EvalResults,
    MetricValue,
    read_results,
    read_summary,
    results_path,
    write_results,
)
from loradeck.core.evaluation.scoring import (
    Candidate,
    best_index,
    check_metric_settings,
    combined_scores,
)
from loradeck.core.evaluation.valloss import read_val_losses, val_loss_for

WEIGHTS = {"clip_score": 1.0, "fid": 1.0}


def test_combined_normalises_and_respects_direction() -> None:
    rows = [
        {"clip_score": 30.0, "fid": 10.0},  # best clip, worst fid
        {"clip_score": 20.0, "fid": 2.0},  # worst clip, best fid
        {"clip_score": 25.0, "fid": 6.0},
    ]
    scores = combined_scores(rows, WEIGHTS)
    assert scores == pytest.approx([0.5, 0.5, 0.5])
    scores = combined_scores(rows, {"clip_score": 3.0, "fid": 1.0})
    assert scores[0] == pytest.approx(0.75) and scores[1] == pytest.approx(0.25)


def test_missing_metric_counts_as_worst_and_unscored_rows_are_none() -> None:
    rows = [{"clip_score": 30.0, "fid": 2.0}, {"clip_score": None, "fid": 2.0}, {}]
    scores = combined_scores(rows, WEIGHTS)
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.5)  # fid ties (1.0), clip missing (0)
    assert scores[2] is None
    assert combined_scores([{"fid": None}], WEIGHTS) == [None]


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "clip_score": st.none() | st.floats(0, 100),
                "fid": st.none() | st.floats(0, 1e6),
                "sharpness": st.none() | st.floats(0, 1e9) | st.just(math.nan),
            }
        ),
        max_size=12,
    )
)
def test_combined_scores_stay_in_range(rows: list[dict[str, float | None]]) -> None:
    for score in combined_scores(rows, {"clip_score": 1, "fid": 2, "sharpness": 0.5}):
        assert score is None or 0.0 <= score <= 1.0 + 1e-9


def test_best_prefers_files_then_score_then_later() -> None:
    assert best_index([Candidate(0.9, False, 0), Candidate(0.5, True, 1)]) == 1
    assert best_index([Candidate(0.9, False, 0), Candidate(None, False, 1)]) == 0
    assert best_index([Candidate(0.7, True, 0), Candidate(0.7, True, 1)]) == 1
    assert best_index([Candidate(None, True, 0)]) is None


def test_metric_settings_are_checked() -> None:
    check_metric_settings(["clip_score", "val_loss"], {"fid": 2.0})
    with pytest.raises(EvaluationError, match=r"'clip'.*known: clip_score"):
        check_metric_settings(["clip"], {})
    with pytest.raises(EvaluationError, match=r"weights\.fid = -1"):
        check_metric_settings(["fid"], {"fid": -1.0})


def _result(job_id: int, name: str, values: list[dict[str, float | None]]) -> EvalResults:
    checkpoints = [
        CheckpointResult(
            key=f"{name}-{i:06d}.safetensors",
            checkpoint=Path(f"/runs/{name}/{name}-{i:06d}.safetensors"),
            epoch=i,
            metrics={
                k: MetricValue(value=v, reason=None if v is not None else "n/a")
                for k, v in row.items()
            },
        )
        for i, row in enumerate(values, start=1)
    ]
    return EvalResults(
        job_id=job_id,
        job_name=name,
        batch_id=7,
        source=Path(f"/runs/{name}"),
        created_at=0.0,
        metrics=list(WEIGHTS),
        checkpoints=checkpoints,
    )


def test_sweep_leaderboard_ranks_across_jobs() -> None:
    a = _result(1, "lr1e-4", [{"clip_score": 20.0, "fid": 9.0}, {"clip_score": 28.0, "fid": 4.0}])
    b = _result(2, "lr1e-3", [{"clip_score": 30.0, "fid": 2.0}, {"clip_score": None, "fid": 8.0}])
    board = build_leaderboard([("batch 7", a), ("batch 7", b)], metrics=list(WEIGHTS), weights={})
    ranked = board.sorted_by("combined")
    assert [(r.job_id, r.key) for r in ranked][:2] == [
        (2, "lr1e-3-000001.safetensors"),
        (1, "lr1e-4-000002.safetensors"),
    ]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    best = board.best()
    assert best is not None and best.key == "lr1e-3-000001.safetensors" and best.best_in_job
    assert {r.key for r in board.rows if r.best_in_job} == {
        "lr1e-3-000001.safetensors",
        "lr1e-4-000002.safetensors",
    }
    assert [r.metrics["fid"] for r in board.sorted_by("fid")] == [2.0, 4.0, 8.0, 9.0]
    assert board.sorted_by("clip_score")[-1].metrics["clip_score"] is None


def test_leaderboard_outputs() -> None:
    a = _result(1, "a", [{"clip_score": 20.0, "fid": 9.0}, {"clip_score": 28.0, "fid": None}])
    board = build_leaderboard([("batch 7", a)], metrics=list(WEIGHTS), weights={"fid": 2.0})
    table = format_table(board)
    assert "CLIP" in table and "FID" in table and "n/a" in table
    assert "best of batch 7: a /runs/a/a-000001.safetensors" in table
    data = json.loads(to_json(board))
    assert data["weights"] == {"clip_score": 1.0, "fid": 2.0}
    assert data["rows"][0]["rank"] == 1 and data["rows"][1]["unavailable"] == {"fid": "n/a"}
    rows = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert rows[0]["best_in_group"] == "1" and rows[1]["fid"] == ""


def test_results_file_roundtrip_and_summary(tmp_path: Path) -> None:
    results = _result(1, "a", [{"clip_score": 20.0, "fid": 1.0}, {"clip_score": 25.0, "fid": 1.0}])
    results = results.model_copy(update={"best": "a-000002.safetensors"})
    path = write_results(results, results_path(tmp_path))
    assert read_results(path) == results
    summary = read_summary(tmp_path)
    assert summary is not None and summary.best_key == "a-000002.safetensors"
    assert summary.best_checkpoint == Path("/runs/a/a-000002.safetensors")
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(EvaluationError, match="not a loradeck results file"):
        read_results(path)


def test_val_loss_per_epoch_step_and_final(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text(
        "\nepoch 1/3\n\nsteps:  33%|###   | 10/30 [00:01<00:02, 9.1it/s, avr_loss=0.2]\r"
        "epoch validation steps: 100%|#####| 4/4 [00:00<00:00, val_epoch_avg_loss=0.5]\n"
        "\x1b[32mepoch 2/3\x1b[0m\n"
        "steps:  66%|######| 20/30 [00:02<00:01, 9.1it/s, avr_loss=0.1]\r"
        "epoch validation steps: 50%|##| 2/4 [00:00<00:00, val_epoch_avg_loss=0.41]\r"
        "epoch validation steps: 100%|#####| 4/4 [00:00<00:00, val_epoch_avg_loss=0.4]\n"
        "\nepoch 3/3\n"
        "epoch validation steps: 100%|#####| 4/4 [00:00<00:00, val_epoch_avg_loss=nan]\n",
        encoding="utf-8",
    )
    losses = read_val_losses(log)
    assert [(v.epoch, v.step) for v in losses][:2] == [(1, 10), (2, 20)]
    assert val_loss_for(losses, epoch=2, step=None, final=False) == pytest.approx(0.4)
    assert val_loss_for(losses, epoch=None, step=15, final=False) == pytest.approx(0.5)
    assert val_loss_for(losses, epoch=3, step=None, final=True) == pytest.approx(0.4)
    assert val_loss_for(losses, epoch=3, step=None, final=False) is None
    assert math.isnan(losses[-1].value)
