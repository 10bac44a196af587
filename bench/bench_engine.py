"""Issue 4 benchmarks: engine throughput, submit-to-start latency, idle cost.

1. 200 jobs of `true` on sim:4 through `loradeck --run-batch`: wall time and overhead
   per job (target <= 30 ms per job), over several runs (each on a fresh tmux server),
   with the CPU time they cost: the loradeck process (and the tmux clients it ran), and
   the tmux server with every job process. loradeck runs with its bytecode compiled, as
   an installed copy does (pip compiles it): the CLI gets a private PYTHONPYCACHEPREFIX,
   warmed by a 1-job batch, whose time is printed as the start-up. (Without that, with
   PYTHONDONTWRITEBYTECODE set, every start compiles loradeck: about 0.4 s more.)
2. Submit-to-start latency when a GPU is free (target p95 <= 150 ms): an engine in this
   process; a job is stored (as `loradeck submit` does) and the clock stops when its
   tmux window has been opened (the job_started event).
3. Engine RSS and CPU while 8 jobs run and nothing changes (target RSS <= 120 MB,
   CPU <= 2% of a core): `loradeck serve` in a subprocess, measured with psutil.

All on a private tmux server that is killed at the end.

    .venv/bin/python bench/bench_engine.py [--jobs 200] [--runs 3] [--latency-samples 40]
        [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cli(home: Path, socket: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loradeck.core.cli",
        "--home",
        str(home),
        "--tmux-socket",
        socket,
        "--tmux-session",
        "bench",
        *args,
    ]


def run_batch_timed(root: Path, socket: str, batch: Path, home: Path) -> tuple[float, float, float]:
    """Run a batch on a fresh tmux server: (wall s, CPU s of loradeck and the tmux clients
    it ran, CPU s of the tmux server and every job process, all reaped by it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        cli(home, socket, "--gpus", "sim:4", "--run-batch", str(batch)),
        capture_output=True,
        text=True,
        env=cli_environment(root),
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:])
        raise SystemExit("run-batch failed")
    engine_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server = subprocess.run(
        ["tmux", "-L", socket, "display-message", "-p", "#{pid}"], capture_output=True, text=True
    ).stdout.strip()
    jobs_cpu = float("nan")
    try:
        fields = Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, and cutime, cstime: the reaped panes (the jobs) and their children
        jobs_cpu = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    return wall, engine_cpu, jobs_cpu


def cli_environment(root: Path) -> dict[str, str]:
    """The CLI's environment: bytecode cached in a private folder, as installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def bench_throughput(root: Path, socket: str, jobs: int, runs: int) -> None:
    one = root / "one.toml"
    one.write_text('[[job]]\nname = "warm"\ncommand = "true"\n')
    run_batch_timed(root, f"{socket}-warm", one, root / "warm-0")  # compiles the bytecode
    startup = min(
        run_batch_timed(root, f"{socket}-warm", one, root / f"warm-{i}")[0] for i in (1, 2)
    )
    batch = root / "many.toml"
    batch.write_text("".join(f'[[job]]\nname = "t{i}"\ncommand = "true"\n' for i in range(jobs)))
    per_job: list[float] = []
    for run in range(runs):
        wall, engine_cpu, jobs_cpu = run_batch_timed(
            root, f"{socket}-{run}", batch, root / f"throughput-{run}"
        )
        per_job.append(1000 * wall / jobs)
        print(
            f"[throughput] run {run + 1}: {jobs} jobs of `true` on sim:4 via --run-batch: "
            f"{wall:.2f} s wall, {1000 * wall / jobs:.1f} ms per job; CPU per job: loradeck "
            f"{1000 * engine_cpu / jobs:.1f} ms, tmux server and jobs {1000 * jobs_cpu / jobs:.1f} ms"
            f"; load average {os.getloadavg()[0]:.1f}"
        )
    # What `true` itself costs when started by bash in a fresh process, for reference.
    t1 = time.perf_counter()
    for _ in range(20):
        subprocess.run(["bash", "-c", "true"], check=True)
    bare = (time.perf_counter() - t1) / 20
    print(
        f"[throughput] median of {runs}: {statistics.median(per_job):.1f} ms per job "
        f"(target <= 30 ms; runs {', '.join(f'{v:.1f}' for v in per_job)}); start-up (a 1-job "
        f"batch) {startup:.2f} s, so {1000 * startup / jobs:.1f} ms of each job's share; "
        f"bash -c true alone: {1000 * bare:.1f} ms"
    )


def bench_latency(root: Path, socket: str, samples: int) -> None:
    from loradeck.core.batch import plan_single
    from loradeck.core.events import JobStarted
    from loradeck.core.home import Home
    from loradeck.core.runtime import build_engine
    from loradeck.core.settings import Settings
    from loradeck.core.store import Store
    from loradeck.core.submit import submit_plan

    settings = Settings()
    home = Home.open(root / "latency")
    engine = build_engine(home, settings, gpus="sim:4", tmux_session="bench", tmux_socket=socket)
    started: dict[int, float] = {}
    arrived = threading.Condition()

    def on_start(event: object) -> None:
        if isinstance(event, JobStarted):
            with arrived:
                started[event.job_id] = time.perf_counter()
                arrived.notify_all()

    engine.bus.subscribe(on_start)
    engine.start()
    store = Store(home.root)
    latencies: list[float] = []
    first = 0.0
    try:
        # The first job, submitted right after the engine starts, is a warm-up and not
        # counted: its wait says whether the engine saw it at once (see the print below).
        for i in range(samples + 1):
            plan = plan_single(
                {"name": f"lat{i}", "command": "true", "gpus": 1}, base_dir=root, settings=settings
            )
            _, (job,) = submit_plan(store, home, plan)
            t_submitted = time.perf_counter()
            limit = 30 if i == 0 else 10
            with arrived:
                arrived.wait_for(lambda j=job.id: j in started, timeout=limit)
            if job.id not in started:
                raise SystemExit(f"job {job.id} did not start within {limit} s")
            if i == 0:
                first = started[job.id] - t_submitted
            else:
                latencies.append(started[job.id] - t_submitted)
            # let it finish so a GPU is free for the next sample
            deadline = time.time() + 10
            while time.time() < deadline:
                store.refresh()
                if store.get(job.id).state.is_terminal:
                    break
                time.sleep(0.02)
    finally:
        engine.stop()
        store.close()
    ms = [1000 * v for v in latencies]
    print(
        f"[latency] submit-to-start with a free GPU over {len(ms)} jobs: "
        f"p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, "
        f"max {max(ms):.0f} ms (target p95 <= 150 ms); the first job, submitted as the engine "
        f"started: {1000 * first:.0f} ms"
    )


def bench_idle(root: Path, socket: str, seconds: float) -> None:
    home = root / "idle"
    serve = subprocess.Popen(
        cli(home, socket, "--gpus", "sim:8", "serve"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(8):
            subprocess.run(
                cli(home, socket, "submit", "--name", f"sleeper{i}", "--", "sleep 600"),
                check=True,
                capture_output=True,
            )
        deadline = time.time() + 30
        while time.time() < deadline:
            out = subprocess.run(
                cli(home, socket, "list", "--state", "running"), capture_output=True, text=True
            )
            if out.stdout.count("RUNNING") == 8:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("8 jobs did not start")
        proc = psutil.Process(serve.pid)
        time.sleep(3)  # let start-up work settle before measuring the steady state
        c0 = proc.cpu_times()
        t0 = time.perf_counter()
        time.sleep(seconds)
        c1 = proc.cpu_times()
        elapsed = time.perf_counter() - t0
        cpu = (c1.user + c1.system - c0.user - c0.system) / elapsed * 100
        rss = proc.memory_info().rss / 2**20
        print(
            f"[idle] engine with 8 running jobs, nothing changing, over {elapsed:.0f} s: "
            f"CPU {cpu:.2f}% of a core (target <= 2%), RSS {rss:.0f} MB (target <= 120 MB)"
        )
    finally:
        subprocess.run(
            cli(home, socket, "cancel", *[str(i) for i in range(1, 9)]), capture_output=True
        )
        serve.terminate()
        serve.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    socket = f"loradeck-bench-{os.getpid()}"
    os.environ.setdefault("TERM", "xterm-256color")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            bench_throughput(root, socket, args.jobs, args.runs)
            bench_latency(root, socket, args.latency_samples)
            bench_idle(root, socket, args.idle_seconds)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


if __name__ == "__main__":
    main()
