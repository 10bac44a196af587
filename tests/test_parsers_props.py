"""Property tests: arbitrary bytes never crash the splitter or a parser, and the bulk
path (parse_bytes, in any chunking) says what the line path says; metrics.jsonl lines are
what json.dumps writes, and a full series keeps each run's lowest and highest point."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loradeck.core.monitor import parsers as parsers_module
from loradeck.core.monitor.metricsfile import MetricsWriter, ValuesRow
from loradeck.core.monitor.parsers import LogParser, make_parser, parse_bytes
from loradeck.core.monitor.results import ParseResult
from loradeck.core.monitor.series import MetricSeries
from loradeck.core.monitor.splitter import LineSplitter
from loradeck.core.settings import UserRegex

LOGS = Path(__file__).parent / "fixtures" / "logs"
PRESETS = [None, "kohya", "ai-toolkit", "diffusers", "onetrainer", "generic", "jsonl"]


def _pieces() -> list[bytes]:
    """Fixture logs cut into lines (keeping their breaks) and halves of lines."""
    pieces: list[bytes] = []
    for log in sorted(LOGS.glob("*.log")):
        data = log.read_bytes()
        start = 0
        for index, byte in enumerate(data):
            if byte in b"\r\n":
                line = data[start : index + 1]
                pieces.append(line)
                pieces.append(line[: len(line) // 2])
                start = index + 1
    return pieces


PIECES = _pieces()
EXTRA = [b"\r", b"\n", b"\r\n", b"\x1b[A", b"\x1b[32m", b"\xff\xfe", b"]", b"  ", b"\t"]
DESCS = ["steps", "Steps", "step", "epoch", "myrender-v2", "validation steps", "Generating Samples"]
POSTFIXES = [
    "avr_loss=0.1", "avr_loss=nan", "loss=0.2, smooth loss=0.3", "lr: 1.0e-04 loss: 6.468e-01",
    "lr: 1.0e-04 loss: nan", "lr=0.0001, step_loss=0.07", "val_avg_loss=0.07, timestep=500",
]  # fmt: skip


OWN_DESC = {
    None: "steps", "kohya": "steps", "ai-toolkit": "myrender-v2", "diffusers": "Steps",
    "onetrainer": "step", "generic": "train", "jsonl": "steps",
}  # fmt: skip
#: Lines that say something, to put between redraws of one step.
SAYING = [
    b"\nsaving checkpoint: /out/x.safetensors\n",
    b"\nSaving at step 1\n",
    b"10/20/2023 15:30:15 - INFO - __main__ - Saved state to /out/checkpoint-1\n",
    b"Saving /w/save/x.safetensors\n",
    b"\nepoch 2/3\n\n",
    b"step=2 loss=0.5\n",
    b"2025-06-29 11:57:37 INFO     saving checkpoint:                     train_util.py:5889\n"
    b"                             /out/long-na\n"
    b"                             me.safetensors\n",
    b"2025-06-29 11:57:40 INFO     epoch is incremented. current_epoch: 1, epoch: 2    x.py:784\n",
    b"Traceback (most recent call last):\nRuntimeError: CUDA out of memory.\n",
]


def bars(preset: str | None) -> st.SearchStrategy[bytes]:
    """tqdm redraws of few steps, mostly of the preset's own bar, so that redraws repeat."""

    @st.composite
    def one(draw: st.DrawFn) -> bytes:
        desc = draw(st.sampled_from([OWN_DESC[preset]] * 4 + ["", *DESCS]))
        n, total = draw(st.integers(0, 2)), draw(st.sampled_from([3, 3, 6]))
        postfix = draw(st.sampled_from(["", *POSTFIXES]))
        head = f"{desc}: " if desc else ""
        tail = f", {postfix}" if postfix else ""
        sep = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
        pad = draw(st.sampled_from(["", "  "]))
        return (
            f"{sep}{head} 50%|#####     | {n}/{total} [00:01<00:02,  1.49it/s{tail}]{pad}".encode()
        )

    return one()


def streams(preset: str | None) -> st.SearchStrategy[bytes]:
    return st.lists(
        st.one_of(
            bars(preset),
            bars(preset),
            st.sampled_from(SAYING),
            st.sampled_from(PIECES),
            st.sampled_from(EXTRA),
            st.binary(max_size=12),
        ),
        max_size=40,
    ).map(b"".join)


cuts = st.lists(st.integers(min_value=1, max_value=300), max_size=12)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, at = [], 0
    for size in sizes:
        chunks.append(data[at : at + size])
        at += size
    chunks.append(data[at:])
    return chunks


def line_path(parser: LogParser, data: bytes) -> list[ParseResult]:
    splitter = LineSplitter()
    results = [parser.parse_line(line) for line in splitter.feed(data) + splitter.flush()]
    results.append(parser.flush())
    return [r for r in results if r is not None]


def bulk_path(parser: LogParser, chunks: list[bytes]) -> list[ParseResult]:
    splitter = LineSplitter()
    results: list[ParseResult] = []
    for chunk in chunks:
        results.extend(parse_bytes(parser, chunk, splitter=splitter, final=False))
    results.extend(parse_bytes(parser, b"", splitter=splitter, final=True))
    return results


def without_redraws(results: list[ParseResult]) -> list[str]:
    """Drop an observation that the next one replaces (the bulk path drops a bar redraw
    the next line redraws); repr so that NaN equals NaN."""
    kept = []
    for here, after in zip(results, [*results[1:], None], strict=False):
        if (
            not here.events
            and here.metrics is not None
            and after is not None
            and after.metrics is not None
            and after.metrics.step == here.metrics.step
        ):
            continue
        kept.append(repr(here))
    return kept


@SETTINGS
@given(data=st.binary(max_size=600), sizes=cuts)
def test_splitter_gives_the_same_lines_in_any_chunking(data: bytes, sizes: list[int]) -> None:
    whole = LineSplitter(max_line=64)
    expected = whole.feed(data) + whole.flush()
    pieces = LineSplitter(max_line=64)
    got: list[str] = []
    for chunk in chunked(data, sizes):
        got.extend(pieces.feed(chunk))
    got.extend(pieces.flush())
    assert got == expected
    for line in got:
        assert "\r" not in line and "\n" not in line and "\x1b" not in line
        assert len(line.encode("utf-8", "surrogatepass")) <= 64 * 3


@SETTINGS
@given(steps=st.lists(st.integers(min_value=0, max_value=10**6), max_size=20), sizes=cuts)
def test_eager_bars_change_no_line_of_a_tqdm_stream(steps: list[int], sizes: list[int]) -> None:
    bars = [
        f"\rsteps:  1%|▏         | {n}/1000000 [00:01<10:00,  1.49it/s, avr_loss=0.1]   "
        for n in steps
    ]
    data = ("".join(bars) + "\nlast line\n").encode()
    plain, eager = LineSplitter(), LineSplitter(eager_bars=True)
    expected = plain.feed(data) + plain.flush()
    got: list[str] = []
    for chunk in chunked(data, sizes):
        got.extend(eager.feed(chunk))
    got.extend(eager.flush())
    assert [line.rstrip() for line in got] == [line.rstrip() for line in expected]


@SETTINGS
@given(
    pick=st.data(),
    sizes=cuts,
    preset=st.sampled_from(PRESETS),
    block=st.sampled_from([97, 500, parsers_module.BLOCK_BYTES]),
)
def test_bulk_path_says_what_the_line_path_says(
    pick: st.DataObject, sizes: list[int], preset: str | None, block: int
) -> None:
    data = pick.draw(streams(preset))
    old = parsers_module.BLOCK_BYTES
    parsers_module.BLOCK_BYTES = block  # small: many blocks, cut at awkward places
    try:
        bulk = bulk_path(make_parser(preset, job_name="myrender-v2"), chunked(data, sizes))
    finally:
        parsers_module.BLOCK_BYTES = old
    lines = line_path(make_parser(preset, job_name="myrender-v2"), data)
    assert without_redraws(bulk) == without_redraws(lines)


@SETTINGS
@given(data=st.binary(max_size=2000), preset=st.sampled_from(PRESETS))
def test_arbitrary_bytes_never_crash_a_parser(data: bytes, preset: str | None) -> None:
    regexes = [UserRegex(name="mine", pattern=r"(?P<loss>\S+) (?P<step>\S+) (?P<checkpoint>\S+)")]
    for parser in (make_parser(preset), make_parser(preset, user_regexes=regexes)):
        batch = parse_bytes(parser, data)
        list(batch)
        batch.latest()


@SETTINGS
@given(text=st.text(max_size=300), preset=st.sampled_from(PRESETS))
def test_arbitrary_text_never_crashes_parse_line(text: str, preset: str | None) -> None:
    parser = make_parser(preset)
    for line in text.splitlines() or [text]:
        parser.parse_line(line)
    parser.flush()


VALUES = st.one_of(st.none(), st.floats(), st.sampled_from([0.0, -0.0, 1e-4, 1e300]))
OBSERVATIONS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 4), st.integers(2**53, 2**64)),
        st.one_of(st.none(), st.integers(0, 3)),
        VALUES,
        VALUES,
        VALUES,
    ),
    max_size=30,
)
KEYS = ("step", "epoch", "loss", "lr", "val_loss")


def expected_lines(rows: list[ValuesRow], t: float) -> list[str]:
    """One json.dumps line per run of one step: newer values win, older ones stay."""
    lines: list[dict[str, float]] = []
    for row in rows:
        if row[2] is None and row[3] is None and row[4] is None:
            continue  # nothing to plot
        line: dict[str, float] = {"t": t}
        line.update({key: value for key, value in zip(KEYS, row, strict=True) if value is not None})
        if lines and row[0] is not None and lines[-1].get("step") == row[0]:
            lines[-1].update(line)
        else:
            lines.append(line)
    ordered = [{key: line[key] for key in ("t", *KEYS) if key in line} for line in lines]
    return [json.dumps(line, separators=(",", ":")) for line in ordered]


@SETTINGS
@given(rows=OBSERVATIONS, cut=st.integers(0, 30))
def test_metrics_file_lines_are_what_json_dumps_writes(rows: list[ValuesRow], cut: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        with MetricsWriter(path, clock=lambda: 1000.1234) as writer:
            writer.write_many(rows[:cut])  # a step's run may span two reads of the log
            writer.write_many(rows[cut:])
        assert path.read_text().splitlines() == expected_lines(rows, 1000.123)


def halved(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The older half cut to the lowest and highest point of each run of four."""
    half = len(points) // 2
    older, kept = points[:half], []
    whole = len(older) - len(older) % 4
    for start in range(0, whole, 4):
        group = older[start : start + 4]
        low = min(group, key=lambda point: point[1])
        high = max(group, key=lambda point: point[1])
        kept.extend(sorted({low, high}))
    return kept + older[whole:] + points[half:]


@SETTINGS
@given(
    values=st.lists(
        st.one_of(st.floats(-10, 10), st.sampled_from([0.0, -0.0, 1.0])), min_size=16, max_size=300
    )
)
def test_a_full_series_keeps_the_low_and_high_of_each_run(values: list[float]) -> None:
    series = MetricSeries(max_points=16)
    expected: list[tuple[float, float]] = []
    for step, value in enumerate(values):
        series.add(step, value)
        expected.append((float(step), value))
        if len(expected) >= 16:
            expected = halved(expected)
    assert series.points() == expected
