"""Log parsers on fixture logs written in each trainer's real format, to exact series.

Every fixture is parsed both ways (LineSplitter + parse_line, and parse_bytes) and both
must give the same steps, losses, events and summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from loradeck.core.errors import ValidationError
from loradeck.core.models import FailureClass
from loradeck.core.monitor.parsers import LogParser, make_parser, parse_bytes
from loradeck.core.monitor.results import LogEvent, Metrics, ParseResult
from loradeck.core.monitor.series import ProgressState
from loradeck.core.monitor.splitter import LineSplitter
from loradeck.core.settings import UserRegex

LOGS = Path(__file__).parent / "fixtures" / "logs"
NAN = float("nan")


def line_path(parser: LogParser, data: bytes) -> list[ParseResult]:
    splitter = LineSplitter()
    results = [parser.parse_line(line) for line in splitter.feed(data) + splitter.flush()]
    results.append(parser.flush())
    return [r for r in results if r is not None]


def bulk_path(parser: LogParser, data: bytes) -> list[ParseResult]:
    return list(parse_bytes(parser, data))


PATHS: dict[str, Callable[[LogParser, bytes], list[ParseResult]]] = {
    "lines": line_path,
    "bulk": bulk_path,
}


def observations(results: list[ParseResult]) -> list[Metrics]:
    return [r.metrics for r in results if r.metrics is not None]


def last_by_step(results: list[ParseResult], field: str) -> dict[int, float]:
    """The last value of ``field`` seen at each step (tqdm redraws a step twice)."""
    values: dict[int, float] = {}
    for m in observations(results):
        value = getattr(m, field)
        if m.step is not None and value is not None:
            values[m.step] = value
    return values


def events(results: list[ParseResult]) -> list[tuple[str, str | None, int | None]]:
    return [(e.kind, e.path, e.step) for r in results for e in r.events]


def same(actual: dict[int, float], expected: dict[int, float]) -> bool:
    """Dict equality where NaN equals NaN."""
    return actual.keys() == expected.keys() and all(
        (math.isnan(actual[k]) and math.isnan(expected[k])) or actual[k] == expected[k]
        for k in expected
    )


def summary(results: list[ParseResult]) -> ProgressState:
    state = ProgressState(clock=lambda: 100.0)
    for result in results:
        state.apply(result)
    return state


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("preset", ["kohya", None])
def test_kohya(way: str, preset: str | None) -> None:
    results = PATHS[way](make_parser(preset), (LOGS / "kohya.log").read_bytes())
    assert same(
        last_by_step(results, "loss"),
        {1: 0.0812, 2: 0.0795, 3: 0.0788, 4: 0.0774, 5: 0.0769, 6: 0.0761, 7: NAN, 8: NAN},
    )
    assert last_by_step(results, "it_per_s") == {
        1: 1 / 1.49, 2: 1 / 1.25, 3: 1 / 1.10, 4: 1 / 1.02, 5: 1.04, 6: 1.07, 7: 1.09, 8: 1.10,
    }  # fmt: skip
    assert last_by_step(results, "eta_s") == {1: 10, 2: 7, 3: 5, 4: 4, 5: 3, 6: 1, 7: 0, 8: 0}
    assert {m.total_steps for m in observations(results) if m.step is not None} == {8}
    assert [(m.epoch, m.total_epochs) for m in observations(results) if m.epoch] == [
        (1, 2),  # epoch 1/2
        (1, None),  # rich: epoch is incremented ... epoch: 1
        (2, None),  # the same, glued after a bar
        (2, 2),  # epoch 2/2
    ]
    assert [m.val_loss for m in observations(results) if m.val_loss is not None] == [0.0701, 0.0698]
    assert events(results) == [
        (
            "checkpoint_saved",
            "/home/user/training/output/very-long-run-name/very-long-run-name-000001.safetensors",
            4,
        ),  # rich-wrapped over three lines, path folded mid-word
        ("sample_generated", None, 4),
        ("nonfinite_loss", None, 7),
        ("checkpoint_saved", "/out/very-long-run-name.safetensors", 8),
    ]
    state = summary(results)
    progress = state.progress
    assert (progress.step, progress.total_steps, progress.epoch, progress.total_epochs) == (
        8,
        8,
        2,
        2,
    )
    assert progress.loss is not None and math.isnan(progress.loss)
    assert (progress.it_per_s, progress.eta_s, progress.val_loss) == (1.10, 0.0, 0.0698)
    assert progress.checkpoints == 2
    assert progress.updated_at == 100.0
    assert state.failure_class is FailureClass.DIVERGED
    assert state.failure_reason == "diverged at step 7"


def test_kohya_progress_line_from_the_brief() -> None:
    parser = make_parser("kohya")
    result = parser.parse_line(
        "steps:  45%|████▌     | 450/1000 [05:01<06:08,  1.49it/s, avr_loss=0.0812]"
    )
    assert result == ParseResult(
        Metrics(step=450, total_steps=1000, loss=0.0812, it_per_s=1.49, eta_s=368.0)
    )
    slow = parser.parse_line("steps:   1%|▋   | 41/3280 [00:50<1:06:54,  1.24s/it, avr_loss=nan]")
    assert slow is not None and slow.metrics is not None
    assert slow.metrics.it_per_s == 1 / 1.24 and slow.metrics.eta_s == 4014.0
    assert slow.events == (LogEvent("nonfinite_loss", step=41, text="loss is nan at step 41"),)


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("preset", ["ai-toolkit", None])
@pytest.mark.parametrize("job_name", ["myrender-v2", None, "loradeck-job-name"])
def test_ai_toolkit(way: str, preset: str | None, job_name: str | None) -> None:
    # The bar shows the config's name, read from "# Running job:" whatever job_name says.
    parser = make_parser(preset, job_name=job_name)
    results = PATHS[way](parser, (LOGS / "aitoolkit.log").read_bytes())
    assert same(
        last_by_step(results, "loss"),
        {1: 0.6468, 2: 0.5912, 3: 0.5527, 4: 0.5101, 5: NAN, 6: NAN},
    )
    assert last_by_step(results, "lr") == {1: 1e-4, 2: 1e-4, 3: 1e-4, 4: 9.5e-5, 5: 9e-5, 6: 8.5e-5}
    assert last_by_step(results, "eta_s") == {1: 51, 2: 40, 3: 30, 4: 20, 5: 10, 6: 0}
    # The latent-caching and sampling bars never move the step.
    assert {m.total_steps for m in observations(results) if m.step is not None} == {6}
    assert events(results) == [
        ("sample_generated", None, None),  # baseline samples before training
        ("checkpoint_saved", None, 3),  # "Saving at step 3"
        ("sample_generated", None, 3),
        ("nonfinite_loss", None, 5),
        ("error", None, 6),  # "Job stopped": Ctrl-C, exit code 0
    ]
    assert [e.text for r in results for e in r.events if e.kind == "error"] == ["Job stopped"]


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("job_name", ["mine", None])
def test_ai_toolkit_counts_only_its_own_job_bar(way: str, job_name: str | None) -> None:
    data = (
        b"\rmine:  10%|#         | 1/10 [00:10<01:30, 10.00s/it, lr: 1.0e-04 loss: 5.000e-01]\n"
        b"\rother:  50%|#####     | 5/10 [00:10<00:10,  2.00s/it, lr: 2.0e-04 loss: 9.000e-01]\n"
        b"\rmine:  20%|##        | 2/10 [00:20<01:20, 10.00s/it, lr: 1.0e-04 loss: 4.000e-01]\n"
    )
    results = PATHS[way](make_parser("ai-toolkit", job_name=job_name), data)
    assert last_by_step(results, "loss") == {1: 0.5, 2: 0.4}


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("preset", ["diffusers", None])
def test_diffusers(way: str, preset: str | None) -> None:
    results = PATHS[way](make_parser(preset), (LOGS / "diffusers.log").read_bytes())
    assert last_by_step(results, "loss") == {
        1: 0.0717, 2: 0.0699, 3: 0.131, 4: 0.0645, 5: 0.0802, 6: 0.0713,
    }  # fmt: skip
    assert last_by_step(results, "lr") == dict.fromkeys(range(1, 7), 0.0001)
    assert last_by_step(results, "it_per_s")[2] == 1 / 4.52
    found = events(results)
    assert found == [
        ("checkpoint_saved", "/out/checkpoint-2", 2),  # glued after the bar, no \r
        ("checkpoint_saved", "/out/checkpoint-4", 4),
        ("sample_generated", None, 6),  # "Running validation..." glued after the bar
        ("oom", None, 6),
        ("error", None, 6),
    ]
    state = summary(results)
    assert (state.progress.total_steps, state.progress.total_epochs) == (6, 1)
    assert state.failure_class is FailureClass.OOM
    assert state.failure_reason.startswith(
        "CUDA out of memory at step 6: torch.OutOfMemoryError: CUDA out of memory."
    )
    assert state.last_error is not None
    assert state.last_error.text.startswith("subprocess.CalledProcessError: Command")


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("preset", ["onetrainer", None])
def test_onetrainer(way: str, preset: str | None) -> None:
    results = PATHS[way](make_parser(preset), (LOGS / "onetrainer.log").read_bytes())
    # Global step = finished epochs * epoch length + step in the epoch.
    assert last_by_step(results, "loss") == {
        1: 0.123, 2: 0.0981, 3: 0.105, 4: 0.0912, 5: 0.0874, 6: 0.0866,
    }  # fmt: skip
    assert last_by_step(results, "eta_s") == {1: 10.0, 2: 8.0, 3: 6.0, 4: 4.0, 5: 2.0, 6: 0.0}
    epochs = {step: epoch for step, epoch in last_by_step(results, "epoch").items() if step}
    assert epochs == {1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 2}
    assert events(results) == [
        ("checkpoint_saved", "/workspace/save/lora-2025-06-29_12-00-00-save-3-1-0.safetensors", 3),
        ("error", None, 6),
    ]
    state = summary(results)
    assert state.progress.total_steps == 6 and state.progress.total_epochs == 2
    assert state.last_error is not None
    assert state.last_error.text.startswith("RuntimeError: Training loss became NaN.")


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize("preset", ["generic", "jsonl", None])
def test_generic(way: str, preset: str | None) -> None:
    results = PATHS[way](make_parser(preset), (LOGS / "generic.log").read_bytes())
    rows = [
        (m.step, m.total_steps, m.epoch, m.total_epochs, m.loss, m.lr, m.val_loss)
        for m in observations(results)
    ]
    assert rows[:4] == [
        (10, 300, 1, 3, 0.6931, 1e-4, None),  # Epoch [1/3] step 10/300 loss=0.6931 lr=1e-4
        (None, None, 1, None, 0.5123, 9e-05, None),  # HF Trainer dict, epoch 0.5 -> 1
        (30, None, None, None, 0.41, 8e-05, None),  # JSON line
        (40, None, None, None, 0.3877, None, 0.401),  # key: value pairs
    ]
    assert rows[4][0] == 50 and math.isnan(rows[4][4])
    assert rows[5][0] == 60 and rows[5][4] == math.inf
    # One nonfinite_loss per run of non-finite values; torchrun's [rank0]: prefix ignored.
    assert events(results) == [
        ("checkpoint_saved", "/out/checkpoint-40", 40),
        ("nonfinite_loss", None, 50),
        ("oom", None, 60),
    ]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("kohya", "kohya"),
        ("aitoolkit", "ai-toolkit"),
        ("diffusers", "diffusers"),
        ("onetrainer", "onetrainer"),
        ("generic", "jsonl"),
    ],
)
def test_auto_detects_the_trainer(fixture: str, expected: str) -> None:
    parser = make_parser(None)
    parse_bytes(parser, (LOGS / f"{fixture}.log").read_bytes())
    assert getattr(parser, "detected", None) == expected


def test_unknown_parser_name_lists_the_presets() -> None:
    with pytest.raises(ValidationError) as caught:
        make_parser("kohyaa")
    message = str(caught.value)
    assert "'kohyaa'" in message
    for name in ("kohya", "ai-toolkit", "diffusers", "onetrainer", "generic", "jsonl", "auto"):
        assert name in message


def test_parser_aliases_and_case() -> None:
    assert make_parser("Kohya-SS").name == "kohya"
    assert make_parser("ostris").name == "ai-toolkit"
    assert make_parser("auto").name == "auto"


def test_user_regexes_add_to_the_preset() -> None:
    parser = make_parser(
        "kohya",
        user_regexes=[
            UserRegex(name="val", pattern=r"my val loss (?P<val_loss>[\d.]+) at (?P<step>\d+)"),
            UserRegex(name="ckpt", pattern=r"wrote (?P<checkpoint>\S+\.pt)"),
        ],
    )
    results = bulk_path(
        parser,
        b"\rsteps:  50%|#####     | 5/10 [00:05<00:05,  1.00it/s, avr_loss=0.5]\n"
        b"my val loss 0.25 at 5\nwrote /out/x.pt\n",
    )
    assert observations(results) == [
        Metrics(step=5, total_steps=10, loss=0.5, it_per_s=1.0, eta_s=5.0),
        Metrics(step=5, val_loss=0.25),
    ]
    assert events(results) == [("checkpoint_saved", "/out/x.pt", 5)]


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        (r"loss=(?P<loss>[\d.", "not a valid regex"),
        (r"loss=(?P<los>[\d.]+)", "unknown group name(s) los"),
        (r"loss=([\d.]+)", "no named group"),
    ],
)
def test_bad_user_regex_is_a_clear_error(pattern: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_parser(None, user_regexes=[UserRegex(name="mine", pattern=pattern)])
    assert "parsers[0] ('mine')" in str(caught.value)
    assert complaint in str(caught.value)


# ---------------------------------------------------------------------------- splitter


def test_splitter_breaks_on_cr_lf_and_crlf_across_reads() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\rc") == ["b"]  # the \n pairs with the \r before it
    assert splitter.feed(b"\r\n\n") == ["c", ""]
    assert splitter.flush() == []


def test_splitter_strips_ansi_and_keeps_partial_lines() -> None:
    splitter = LineSplitter()
    colored = b"\x1b[2;36m2025\x1b[0m \x1b]8;id=1;file:///x.py\x1b\\x.py\x1b]8;;\x1b\\ ok\x07\x1b[A"
    assert splitter.feed(colored + b"\npart") == ["2025 x.py ok"]
    assert splitter.pending == b"part"
    assert splitter.feed(b"\xe2\x96") == []  # half a character waits for the rest
    assert splitter.feed(b"\x88 \xff\n") == ["part█ \ufffd"]


def test_splitter_bounds_a_line_without_breaks() -> None:
    splitter = LineSplitter(max_line=16)
    lines = splitter.feed(("é" * 20).encode())
    assert lines == ["é" * 8, "é" * 8]  # cut at 16 bytes, never inside a character
    assert splitter.flush() == ["é" * 4]


def test_eager_bars_hand_out_a_whole_bar_at_once() -> None:
    splitter = LineSplitter(eager_bars=True)
    bar = "steps:  45%|████▌     | 450/1000 [05:01<06:08,  1.49it/s, avr_loss=0.0812]"
    assert splitter.feed(("\r" + bar).encode()) == ["", bar]  # "" before the first \r
    assert splitter.feed(b"   ") == []  # tqdm's padding
    assert splitter.feed(("\r" + bar + "\n").encode()) == [bar]
    assert splitter.feed(b"log line\n") == ["log line"]


@pytest.mark.parametrize(
    "line",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.",
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total)",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "[rank1]: torch.OutOfMemoryError: CUDA out of memory.",
    ],
)
@pytest.mark.parametrize("preset", ["kohya", "ai-toolkit", "diffusers", "onetrainer", "generic"])
def test_cuda_oom_signatures(line: str, preset: str) -> None:
    parser = make_parser(preset)
    parser.parse_line("Traceback (most recent call last):")
    parser.parse_line('  File "train.py", line 3, in <module>')
    result = parser.parse_line(line)
    # The OOM line ends the traceback: it is an oom, not also an error.
    assert result is not None and [e.kind for e in result.events] == ["oom"]


@pytest.mark.parametrize(
    ("line", "val_loss"),
    [
        ("validation loss: 0.1", 0.1),
        ("epoch 3 val_loss=0.25", 0.25),
        ("avr_val_loss: 1.5e-02", 0.015),
        (
            "2025-06-29 11:57:40 INFO     validation loss: 0.0712         train_network.py:1600",
            0.0712,
        ),
    ],
)
def test_kohya_validation_loss_lines(line: str, val_loss: float) -> None:
    parser = make_parser("kohya")
    results = [parser.parse_line(line), parser.flush()]
    assert [r.metrics for r in results if r is not None] == [Metrics(val_loss=val_loss)]


def test_an_exception_that_ends_a_traceback_is_an_error_event() -> None:
    parser = make_parser("kohya")
    assert parser.parse_line("ValueError: not in a traceback") is None
    parser.parse_line("Traceback (most recent call last):")
    parser.parse_line('  File "train_network.py", line 10, in train')
    parser.parse_line("    raise ValueError(x)")
    result = parser.parse_line("ValueError: bad config: network_dim must be > 0")
    assert result is not None
    assert result.events == (
        LogEvent("error", text="ValueError: bad config: network_dim must be > 0"),
    )
