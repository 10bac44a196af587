"""Issue 5 benchmark: engine CPU while 8 jobs each print 50 kohya progress updates a
second (target <= 5% of a core).

`loradeck serve` hosts the engine in a subprocess on sim:8 with a private tmux server;
8 jobs run a small script that redraws a kohya-style bar 50 times a second. The engine
process's CPU time (user + system of that one process, all its threads) is measured with
psutil over a steady window; the jobs, their log tees and tmux are other processes and
are not counted. The load average is printed with the figure: on a shared machine the
same work costs more CPU time under load.

``--rate 0`` runs the same jobs printing one bar and then nothing: the engine's cost of
8 running jobs without log traffic, to set the figure against.

    .venv/bin/python bench/bench_monitor.py [--seconds 20] [--jobs 8] [--rate 50]
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
total, rate = 100000, float(sys.argv[1])
start = time.time()
for step in range(1, total + 1):
    loss = 0.1 + 1.0 / step
    sys.stdout.write(f"\rsteps:  {100 * step // total:3d}%|##        | {step}/{total} [00:10<1:00:00,  50.00it/s, avr_loss={loss:.4f}]")
    sys.stdout.flush()
    if rate <= 0:
        time.sleep(3600)
    time.sleep(max(0.0, start + step / rate - time.time()))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50, help="updates per second per job")
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
            for i in range(args.jobs):
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
                        str(args.rate),
                    ],
                    check=True,
                    capture_output=True,
                )
            deadline = time.time() + 60
            while time.time() < deadline:
                out = subprocess.run(
                    [*base, "list", "--json"], capture_output=True, text=True, check=True
                )
                running, steps = out.stdout.count('"RUNNING"'), out.stdout.count('"step":')
                if running == args.jobs and steps >= args.jobs:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"{args.jobs} jobs did not start reporting progress")
            proc = psutil.Process(serve.pid)
            time.sleep(3)
            load0 = os.getloadavg()[0]
            c0, t0 = proc.cpu_times(), time.perf_counter()
            time.sleep(args.seconds)
            c1, elapsed = proc.cpu_times(), time.perf_counter() - t0
            load1 = os.getloadavg()[0]
            cpu = (c1.user + c1.system - c0.user - c0.system) / elapsed * 100
            out = subprocess.run(
                [*base, "list", "--json"], capture_output=True, text=True, check=True
            )
            steps = out.stdout.count('"step":')
            print(
                f"[monitor] engine CPU with {args.jobs} jobs x {args.rate:g} progress updates/s "
                f"over {elapsed:.0f} s: {cpu:.2f}% of a core (target <= 5%); "
                f"RSS {proc.memory_info().rss / 2**20:.0f} MB; {steps} jobs with stored progress; "
                f"load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs"
            )
        finally:
            subprocess.run(
                [*base, "cancel", *[str(i) for i in range(1, args.jobs + 1)]], capture_output=True
            )
            serve.terminate()
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:  # SIGTERM not acted on: don't leave it behind
                print("[monitor] the engine did not stop on SIGTERM; killed", file=sys.stderr)
                serve.kill()
                serve.wait(30)
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


if __name__ == "__main__":
    main()
