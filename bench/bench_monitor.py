"""Issue 5 benchmark: engine CPU while 8 jobs each print 50 kohya progress updates a
second (target <= 5% of a core).

`loradeck serve` hosts the engine in a subprocess on sim:8 with a private tmux server;
8 jobs run a small script that redraws a kohya-style bar 50 times a second. The engine
process's CPU time is measured with psutil over a steady window; the jobs' own CPU is
not counted (they are other processes).

    .venv/bin/python bench/bench_monitor.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PRINTER = r"""
import sys, time
total = 100000
start = time.time()
for step in range(1, total + 1):
    loss = 0.1 + 1.0 / step
    sys.stdout.write(f"\rsteps:  {100 * step // total:3d}%|##        | {step}/{total} [00:10<1:00:00,  50.00it/s, avr_loss={loss:.4f}]")
    sys.stdout.flush()
    time.sleep(max(0.0, start + step / 50 - time.time()))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    socket = f"loradeck-bench-mon-{os.getpid()}"
    os.environ.setdefault("TERM", "xterm-256color")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "printer.py"
        script.write_text(PRINTER)
        home = root / "home"
        base = [
            sys.executable,
            "-m",
            "loradeck.core.cli",
            "--home",
            str(home),
            "--tmux-socket",
            socket,
            "--tmux-session",
            "bench",
        ]
        serve = subprocess.Popen(
            [*base, "--gpus", "sim:8", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for i in range(8):
                subprocess.run(
                    [
                        *base,
                        "submit",
                        "--name",
                        f"printer{i}",
                        "--parser",
                        "kohya",
                        "--",
                        sys.executable,
                        str(script),
                    ],
                    check=True,
                    capture_output=True,
                )
            deadline = time.time() + 60
            while time.time() < deadline:
                out = subprocess.run(
                    [*base, "list", "--json"], capture_output=True, text=True, check=True
                )
                if out.stdout.count('"RUNNING"') == 8 and out.stdout.count('"step":') >= 8:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("8 jobs did not start reporting progress")
            proc = psutil.Process(serve.pid)
            time.sleep(3)
            c0, t0 = proc.cpu_times(), time.perf_counter()
            time.sleep(args.seconds)
            c1, elapsed = proc.cpu_times(), time.perf_counter() - t0
            cpu = (c1.user + c1.system - c0.user - c0.system) / elapsed * 100
            out = subprocess.run(
                [*base, "list", "--json"], capture_output=True, text=True, check=True
            )
            steps = out.stdout.count('"step":')
            print(
                f"[monitor] engine CPU with 8 jobs x 50 progress updates/s over {elapsed:.0f} s: "
                f"{cpu:.2f}% of a core (target <= 5%); RSS {proc.memory_info().rss / 2**20:.0f} MB; "
                f"{steps} jobs with stored progress"
            )
        finally:
            subprocess.run([*base, "cancel", *[str(i) for i in range(1, 9)]], capture_output=True)
            serve.terminate()
            serve.wait(30)
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


if __name__ == "__main__":
    main()
