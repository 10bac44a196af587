"""Log parsing throughput and follow latency. Prints its figures; asserts nothing.

1. Throughput: a kohya-style log (default 200 MB) is written to a temp file, then read
   in 1 MiB blocks and parsed with ``parse_bytes`` (kohya preset, and auto-detect), as a
   restarted engine catching up would. Target: >= 40 MB/s on one core. Also the whole
   pipeline (summary, series, metrics.jsonl), for information.
   The log is what sd-scripts writes to a 100-column terminal: each step's bar drawn
   twice (``update()``, then ``set_postfix()`` with the new ``avr_loss``), an ``epoch``
   line and a rich ``epoch is incremented`` record per epoch, a checkpoint every 500
   steps.
2. Latency: a writer process appends kohya bar redraws (every 5 ms by default) and
   records when each was written; a ``LogFollower`` + ``LogPipeline`` in this process
   timestamps each step's observation. Target: p95 <= 150 ms.

Throughput is CPU time of this process (``time.process_time``): on a shared machine wall
time also counts other processes. The first line prints a calibration (CPU seconds for
``sum(range(10**7))``; about 0.08-0.1 s on a current desktop core).

Usage: ``python bench/bench_parser.py [--mb 200] [--repeat 3] [--steps 400] [--interval 0.005]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from loradeck.core.monitor.follower import LogFollower
from loradeck.core.monitor.parsers import make_parser, parse_bytes
from loradeck.core.monitor.pipeline import LogPipeline
from loradeck.core.monitor.splitter import LineSplitter

BLOCK = 1 << 20
FULL, PARTS = "█", " ▏▎▍▌▋▊▉"


def _clock(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def kohya_bar(n: int, total: int, loss: str | None, ncols: int = 100) -> str:
    """One redraw of kohya's ``steps`` bar, as tqdm lays it out for ``ncols``."""
    rate = 1.49 + (n % 7) / 100
    elapsed, remaining = int(n / rate), int((total - n) / rate)
    post = f", avr_loss={loss}" if loss is not None else ""
    left = f"steps: {100 * n / total:3.0f}%|"
    right = f"| {n}/{total} [{_clock(elapsed)}<{_clock(remaining)}, {rate:.2f}it/s{post}]"
    width = max(1, ncols - len(left) - len(right))
    cells, part = divmod(int(n / total * width * 8), 8)
    fill = FULL * cells + (
        (PARTS[part] if part else " ") + " " * (width - cells - 1) if cells < width else ""
    )
    return left + fill + right


def write_kohya_log(path: Path, megabytes: float) -> tuple[int, int]:
    """Write about ``megabytes`` of kohya output; returns (bytes, steps)."""
    target = int(megabytes * 1e6)
    steps_per_epoch = 10_000
    total = max(
        steps_per_epoch, int(target / 230) // steps_per_epoch * steps_per_epoch + steps_per_epoch
    )
    epochs = total // steps_per_epoch
    written = step = 0
    loss = 0.0812
    with path.open("wb") as out:
        head = "running training / 学習開始\n  num epochs / epoch数: {}\n  total optimization steps / 学習ステップ数: {}\n"
        out.write(head.format(epochs, total).encode())
        out.write(("\r" + kohya_bar(0, total, None)).encode())
        while written < target and step < total:
            epoch = step // steps_per_epoch + 1
            parts = [f"\nepoch {epoch}/{epochs}\n\n",
                     f"2025-06-29 11:57:32 INFO     epoch is incremented. current_epoch: {epoch - 1}, "
                     f"epoch: {epoch}    train_util.py:784\n"]  # fmt: skip
            for _ in range(steps_per_epoch):
                step += 1
                old = f"{loss:.3g}"
                loss = loss * 0.99995 + (step % 13) * 1e-6
                parts.append("\r" + kohya_bar(step, total, old))
                parts.append("\r" + kohya_bar(step, total, f"{loss:.3g}"))
                if step % 500 == 0:
                    parts.append(f"\nsaving checkpoint: /out/run/run-step{step:08d}.safetensors\n")
            chunk = "".join(parts).encode()
            out.write(chunk)
            written += len(chunk)
    return path.stat().st_size, step


def throughput(path: Path, preset: str | None) -> tuple[float, float, int]:
    """(MB/s by CPU time, MB/s by wall time, observations) for parse_bytes over the file."""
    parser = make_parser(preset)
    splitter = LineSplitter()
    size = path.stat().st_size
    observations = 0
    cpu, wall = time.process_time(), time.perf_counter()
    with path.open("rb") as log:
        while block := log.read(BLOCK):
            observations += len(parse_bytes(parser, block, splitter=splitter, final=False))
    observations += len(parse_bytes(parser, b"", splitter=splitter, final=True))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return size / 1e6 / cpu, size / 1e6 / wall, observations


def pipeline_throughput(path: Path, workdir: Path) -> float:
    """MB/s (CPU time) through LogPipeline: parse, summary, series, metrics.jsonl."""
    pipeline = LogPipeline(make_parser("kohya"), metrics_path=workdir / "metrics.jsonl")
    size = path.stat().st_size
    cpu = time.process_time()
    with path.open("rb") as log:
        while block := log.read(BLOCK):
            pipeline.feed(block)
    pipeline.finish()
    pipeline.close()
    return size / 1e6 / (time.process_time() - cpu)


WRITER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {bench!r})
    from bench_parser import kohya_bar
    path, steps, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    written = {{}}
    with open(path, "ab", buffering=0) as log:
        for n in range(1, steps + 1):
            log.write(("\\r" + kohya_bar(n, steps, "0.0812")).encode())
            written[n] = time.monotonic()
            time.sleep(interval)
    print(json.dumps(written))
    """
)


def latency(workdir: Path, steps: int, interval: float) -> list[float]:
    """Seconds from a bar redraw written to its step observed, for each step."""
    log = workdir / "latency.log"
    log.write_bytes(b"")
    seen: dict[int, float] = {}
    lock = threading.Lock()
    pipeline = LogPipeline(make_parser("kohya"))

    def on_data(_path: Path, data: bytes) -> None:
        batch = pipeline.feed(data)
        now = time.monotonic()
        with lock:
            for metrics in batch.metrics():
                if metrics.step is not None:
                    seen.setdefault(metrics.step, now)

    follower = LogFollower(on_data)
    follower.follow(log)
    follower.start()
    try:
        code = WRITER.format(bench=str(Path(__file__).resolve().parent))
        done = subprocess.run(
            [sys.executable, "-c", code, str(log), str(steps), str(interval)],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        written = {int(k): v for k, v in json.loads(done.stdout).items()}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= steps:
                    break
            time.sleep(0.01)
    finally:
        follower.stop()
    with lock:
        return [seen[n] - written[n] for n in written if n in seen]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--mb", type=float, default=200.0, help="size of the kohya log (MB)")
    args.add_argument("--steps", type=int, default=400, help="bar redraws in the latency run")
    args.add_argument("--interval", type=float, default=0.005, help="seconds between redraws")
    args.add_argument("--repeat", type=int, default=3, help="throughput passes per preset")
    opts = args.parse_args()
    calibration = time.process_time()
    sum(range(10_000_000))
    calibration = time.process_time() - calibration
    print(f"machine: {os.cpu_count()} CPUs; sum(range(1e7)) takes {calibration:.3f} s CPU")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log = workdir / "kohya.log"
        start = time.perf_counter()
        size, steps = write_kohya_log(log, opts.mb)
        print(f"kohya log: {size / 1e6:.1f} MB, {steps} steps, {size / steps / 2:.0f} B per bar "
              f"redraw (written in {time.perf_counter() - start:.1f} s)")  # fmt: skip
        for preset in ("kohya", None):
            runs = [throughput(log, preset) for _ in range(opts.repeat)]
            cpu = sorted(run[0] for run in runs)
            wall = sorted(run[1] for run in runs)
            print(f"parse_bytes [{preset or 'auto'}] over {opts.repeat} passes: "
                  f"median {statistics.median(cpu):.1f} MB/s CPU time (best {cpu[-1]:.1f}; "
                  f"wall median {statistics.median(wall):.1f}), {runs[0][2]} results  "
                  "target >= 40 MB/s")  # fmt: skip
        print(f"LogPipeline (parse + summary + series + metrics.jsonl): "
              f"{pipeline_throughput(log, workdir):.1f} MB/s CPU time")  # fmt: skip
        delays = latency(workdir, opts.steps, opts.interval)
    if len(delays) < 2:
        print("latency: no observations")
        return
    delays.sort()
    p95 = delays[int(0.95 * (len(delays) - 1))]
    print(f"latency line written -> metric event over {len(delays)}/{opts.steps} redraws "
          f"(every {opts.interval * 1000:.0f} ms): p50 {statistics.median(delays) * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms  target p95 <= 150 ms")  # fmt: skip


if __name__ == "__main__":
    main()
