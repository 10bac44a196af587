"""From parse results to what loradeck keeps: summary, bounded series, metrics.jsonl,
and the pipeline that wires them to a log."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loradeck.core.models import FailureClass
from loradeck.core.monitor.metricsfile import MetricsWriter, read_metrics
from loradeck.core.monitor.parsers import make_parser, parse_bytes
from loradeck.core.monitor.pipeline import LogPipeline
from loradeck.core.monitor.results import LogEvent, Metrics, ParseResult
from loradeck.core.monitor.series import MetricSeries, ProgressState

LOGS = Path(__file__).parent / "fixtures" / "logs"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_progress_state_folds_fields_and_counts_events() -> None:
    clock = Clock()
    state = ProgressState(clock=clock)
    state.apply(ParseResult(Metrics(total_steps=100, total_epochs=4)))
    clock.now = 1001.0
    state.apply(ParseResult(Metrics(step=10, loss=0.5, it_per_s=2.0, eta_s=45.0)))
    state.apply(ParseResult(events=(LogEvent("checkpoint_saved", path="/a", step=10),)))
    state.apply(ParseResult(Metrics(epoch=2)))
    state.apply(ParseResult(events=(LogEvent("sample_generated", step=10),)))
    progress = state.progress
    assert progress.model_dump() == {
        "step": 10, "total_steps": 100, "epoch": 2, "total_epochs": 4, "loss": 0.5,
        "lr": None, "it_per_s": 2.0, "eta_s": 45.0, "val_loss": None, "checkpoints": 1,
        "updated_at": 1001.0,
    }  # fmt: skip
    assert progress.fraction == 0.1
    assert state.samples == 1
    assert state.failure_class is None and state.failure_reason == ""


def test_oom_wins_over_divergence_and_the_first_of_each_is_kept() -> None:
    state = ProgressState()
    state.apply(ParseResult(events=(LogEvent("nonfinite_loss", step=7),)))
    assert state.failure_class is FailureClass.DIVERGED
    assert state.failure_reason == "diverged at step 7"
    state.apply(ParseResult(events=(LogEvent("nonfinite_loss", step=9),)))
    state.apply(ParseResult(events=(LogEvent("oom", step=8, text="CUDA out of memory."),)))
    state.apply(ParseResult(events=(LogEvent("oom", step=9, text="again"),)))
    assert state.divergence is not None and state.divergence.step == 7
    assert state.failure_class is FailureClass.OOM
    assert state.failure_reason == "CUDA out of memory at step 8: CUDA out of memory."


def test_apply_batch_equals_applying_each_result() -> None:
    data = (LOGS / "kohya.log").read_bytes()
    batch = parse_bytes(make_parser("kohya"), data)
    one, each = ProgressState(clock=lambda: 5.0), ProgressState(clock=lambda: 5.0)
    one.apply_batch(batch)
    for result in batch:
        each.apply(result)
    assert repr(one.progress) == repr(each.progress)
    assert one.checkpoints == each.checkpoints and one.divergence == each.divergence


def test_a_bar_with_an_unknown_eta_keeps_the_last_known_one() -> None:
    clock = Clock()
    state = ProgressState(clock=clock)
    bar = "\rsteps:  10%|#         | {n}/100 [00:10<{eta}, {rate}, avr_loss=0.5]\n"
    state.apply_batch(
        parse_bytes(make_parser("kohya"), bar.format(n=10, eta="01:30", rate="1.00it/s").encode())
    )
    assert state.metrics.eta_s == 90.0 and state.progress.updated_at == 1000.0
    clock.now = 1001.0
    # tqdm's "?" for an unknown ETA: the step and loss move on, the ETA stays.
    state.apply_batch(
        parse_bytes(make_parser("kohya"), bar.format(n=11, eta="?", rate="?it/s").encode())
    )
    assert state.metrics.eta_s == 90.0 and state.step == 11 and state.metrics.loss == 0.5
    assert state.progress.updated_at == 1001.0


def test_series_keeps_at_most_max_points_and_the_spikes() -> None:
    series = MetricSeries(max_points=64)
    for step in range(1, 10_001):
        value = 100.0 if step == 1234 else 1.0 / step
        series.add(step, value)
    points = series.points()
    assert len(points) < 64
    steps = [x for x, _ in points]
    assert steps == sorted(steps) and steps[-1] == 10_000
    assert (1234.0, 100.0) in points  # the spike survives being downsampled
    assert max(y for _, y in points) == 100.0
    assert min(y for _, y in points) == 1.0 / 10_000


def test_series_replaces_a_step_seen_again_and_skips_nan() -> None:
    series = MetricSeries(max_points=16)
    series.add(1, 0.5)
    series.add(2, 0.4)
    series.add(2, 0.3)  # the second redraw of step 2
    series.add(3, math.nan)
    series.add(1, 0.9)  # resumed from an earlier checkpoint
    assert series.points() == [(1.0, 0.9)]
    with pytest.raises(ValueError, match="at least 16"):
        MetricSeries(max_points=4)


def test_metrics_writer_one_line_per_step_and_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "job" / "metrics.jsonl"
    clock = Clock()
    with MetricsWriter(path, flush_interval=0.5, clock=clock) as writer:
        writer.write(Metrics(step=1, loss=0.8))  # update() redraw: last step's loss
        writer.write(Metrics(step=1, loss=0.7))  # set_postfix() redraw: this step's
        writer.write(Metrics(epoch=1))  # no loss, lr or val_loss: not a series point
        writer.write(Metrics(val_loss=0.6), step=1)
        writer.write(Metrics(step=2, loss=math.nan, lr=1e-4))
        assert read_metrics(path) == []  # buffered
        clock.now += 0.6
        writer.flush_if_due()
        assert len(read_metrics(path)) == 2
    rows = read_metrics(path)
    assert rows[:1] == [{"t": 1000.0, "step": 1, "loss": 0.7, "val_loss": 0.6}]
    assert rows[1]["step"] == 2 and math.isnan(rows[1]["loss"]) and rows[1]["lr"] == 1e-4
    with path.open("a") as handle:
        handle.write('{"t": 1.0, "step": 3, "lo')  # the writer died mid-line
    assert len(read_metrics(path)) == 2
    with MetricsWriter(path, clock=clock) as writer:
        writer.write(Metrics(step=3, loss=0.5))
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3


def test_read_metrics_of_a_missing_file(tmp_path: Path) -> None:
    assert read_metrics(tmp_path / "none.jsonl") == []


def test_pipeline_series_summary_file_and_offset(tmp_path: Path) -> None:
    data = (LOGS / "kohya.log").read_bytes()
    events: list[LogEvent] = []
    clock = Clock()
    pipeline = LogPipeline(
        make_parser(None), metrics_path=tmp_path / "metrics.jsonl", on_event=events.append,
        series_points=16, clock=clock,
    )  # fmt: skip
    for at in range(0, len(data), 333):
        pipeline.feed(data[at : at + 333])
    pipeline.finish()
    pipeline.close()
    assert pipeline.offset == len(data)
    assert pipeline.series["loss"].points() == [
        (1.0, 0.0812), (2.0, 0.0795), (3.0, 0.0788), (4.0, 0.0774), (5.0, 0.0769), (6.0, 0.0761),
    ]  # fmt: skip
    assert pipeline.series["val_loss"].points() == [(4.0, 0.0698)]
    assert [e.kind for e in events] == [
        "checkpoint_saved", "sample_generated", "nonfinite_loss", "checkpoint_saved",
    ]  # fmt: skip
    assert pipeline.state.progress.checkpoints == 2
    rows = read_metrics(tmp_path / "metrics.jsonl")
    losses = {row["step"]: row.get("loss") for row in rows}
    assert losses[1] == 0.0812 and losses[6] == 0.0761
    assert losses[7] is not None and math.isnan(losses[7])
    # Both validation redraws came at step 4: the later wins.
    assert [(row["step"], row["val_loss"]) for row in rows if "val_loss" in row] == [(4, 0.0698)]


def test_pipeline_offset_excludes_the_partial_line_and_holds_a_record() -> None:
    clock = Clock()
    pipeline = LogPipeline(make_parser("kohya"), hold_s=0.5, clock=clock)
    first = b"2025-06-29 11:57:37 INFO     saving checkpoint:          train_util.py:5889\n"
    second = b"                             /out/x.safetensors\n"
    pipeline.feed(first)
    assert pipeline.state.checkpoints == []  # the path may come on the next line
    pipeline.feed(second + b"epoch 1/")
    assert pipeline.offset == len(first + second)
    assert pipeline.flush_if_due().events() == []  # not quiet for long enough yet
    clock.now += 0.6
    assert [e.path for e in pipeline.flush_if_due().events()] == ["/out/x.safetensors"]
    assert pipeline.flush_if_due().events() == []
    pipeline.feed(b"2\n")
    assert pipeline.state.metrics.epoch == 1
    assert pipeline.offset == len(first + second + b"epoch 1/2\n")
