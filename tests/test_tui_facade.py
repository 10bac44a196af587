"""The facade's readers (real files): log tails, metric files, the event log."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from loradeck.core import events as ev
from loradeck.core.facade import (
    METRICS_FILE,
    EventTail,
    MetricPoint,
    MetricsTail,
    checkpoints_from_events,
    event_from_json,
    log_tail,
)
from loradeck.core.models import Job, JobSpec


def _job(folder: Path) -> Job:
    return Job(
        id=7,
        spec=JobSpec(name="j", command="true"),
        command="true",
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=time.time(),
    )


def test_log_tail_shows_what_a_terminal_shows(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(
        b"epoch 1/2\n"
        b"steps:  10%|#    | 1/10 [loss=0.9]\rsteps:  20%|##   | 2/10 [loss=0.8]\r\n"
        b"\x1b[32mgreen\x1b[0m text\twith tab\n"
        b"partial bar\r"
    )
    lines = log_tail(log, 10)
    assert lines == [
        "epoch 1/2",
        "steps:  20%|##   | 2/10 [loss=0.8]",
        "green text    with tab",
        "partial bar",
    ]
    assert log_tail(log, 2) == lines[-2:]
    assert log_tail(tmp_path / "missing.log", 5) == []


def test_metrics_tail_reads_only_what_was_appended(tmp_path: Path) -> None:
    job = _job(tmp_path)
    path = tmp_path / METRICS_FILE
    tail = MetricsTail(max_points=8)
    assert tail.read(job) is None
    path.write_text(
        '{"t":1,"step":1,"loss":0.9,"lr":0.001}\n{"t":2,"step":2,"loss":0.8}\n{"t":3,"st'
    )
    assert tail.read(job) == [MetricPoint(1, 0.9, 0.001), MetricPoint(2, 0.8, None)]
    with path.open("a") as out:  # the torn line is completed; a step seen again wins
        out.write('ep":2,"loss":0.7}\n{"t":4,"step":3,"loss":NaN}\nnot json\n')
    assert tail.read(job)[-2:] == [
        MetricPoint(2, 0.7, None),
        MetricPoint(3, tail.read(job)[-1].loss, None),
    ]
    with path.open("a") as out:
        out.writelines(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(4, 30))
    points = tail.read(job)
    assert points is not None and len(points) <= 8 and points[-1].step == 29
    path.write_text('{"step":1,"loss":0.5}\n')  # a new attempt started the file again
    assert tail.read(job) == [MetricPoint(1, 0.5, None)]


def test_event_tail_turns_logged_lines_back_into_events(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = ev.EventLog(path)
    log(ev.JobStarted(job_id=1, name="a", gpu_ids=(0, 1), attempt=2, at=10.0))
    tail = EventTail(path)
    tail.skip_to_end()
    assert tail.read_new() == []
    log(ev.CheckpointSaved(job_id=1, name="a", path="/x/a.safetensors", step=5, at=11.0))
    with path.open("a") as out:
        out.write('{"kind": "job_started", "job_id": "x"')  # torn: not read yet
    (saved,) = tail.read_new()
    assert saved == ev.CheckpointSaved(job_id=1, name="a", path="/x/a.safetensors", step=5, at=11.0)
    recent = tail.recent(10)
    assert recent[-1] == ev.JobStarted(job_id=1, name="a", gpu_ids=(0, 1), attempt=2, at=10.0)
    (entry,) = checkpoints_from_events(recent)
    assert (entry.job_id, entry.step, entry.path) == (1, 5, "/x/a.safetensors")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)
        ),
    )
)
def test_any_logged_object_is_an_event_or_nothing(data: dict[str, object]) -> None:
    for kind in ("job_started", "checkpoint_saved", "engine_message", "nonsense"):
        event = event_from_json({**data, "kind": kind})
        assert event is None or isinstance(event, ev.Event)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_any_log_bytes_give_lines(tmp_path_factory: object, data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "output.log"
        path.write_bytes(data)
        lines = log_tail(path, 50)
        assert len(lines) <= 50
        controls = {chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)}
        assert all(not controls & set(line) for line in lines)
