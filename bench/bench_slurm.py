"""Issue 8 benchmark: loradeck's overhead on top of Slurm, on the dev cluster.

Two figures, each beside the same figure for plain ``sbatch`` on the same cluster:

* submit-to-start latency: from the submit (``loradeck`` store write + engine wake, or the
  ``sbatch`` call) to the first line of the job's command, one job at a time;
* throughput: 200 one-line jobs (``gpus = 0``), from the submit to the last one ended (as
  loradeck's store says, or as squeue says).

Needs the single-node Slurm of ``scripts/slurm-dev-cluster.sh`` (started here if it is
not running; skipped with the reason where Slurm cannot be installed).

    .venv/bin/python bench/bench_slurm.py [--latency-runs 10] [--jobs 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from loradeck.core.batch import load_batch
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.executor.slurm_commands import SlurmCommands
from loradeck.core.executor.slurm_states import parse_time
from loradeck.core.home import Home
from loradeck.core.models import Job, JobSpec, JobState
from loradeck.core.runtime import build_engine
from loradeck.core.settings import ExecutorSettings, SchedulerSettings, Settings, SlurmSettings
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "slurm-dev-cluster.sh"
T = TypeVar("T")
STAMP = 'python3 -c "import time; print(repr(time.time()))" > {path}'


def wait(predicate: Callable[[], T | None], timeout: float, what: str, step: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_slurm: timed out waiting for {what}")
        time.sleep(step)


def read_stamp(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
        return float(text) if text else None
    except (OSError, ValueError):
        return None


def plain_latency(commands: SlurmCommands, root: Path, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        stamp = root / f"plain-{i}"
        t0 = time.time()
        ref = commands.run(
            "sbatch", "--parsable", "-o", "/dev/null", "--wrap", STAMP.format(path=stamp)
        ).strip()
        started = wait(partial(read_stamp, stamp), 60, f"plain job {ref}")
        out.append(started - t0)
    return out


def plain_throughput(commands: SlurmCommands, jobs: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    refs = [
        commands.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true").strip()
        for _ in range(jobs)
    ]
    submitted = time.perf_counter() - t0
    ids = ",".join(refs)

    def all_ended() -> bool:
        states = commands.run("squeue", "-h", "-t", "all", "-j", ids, "-o", "%T").split()
        return len(states) == jobs and all(s in ("COMPLETED", "FAILED") for s in states)

    wait(all_ended, 600, "the plain jobs", step=0.2)
    return submitted, time.perf_counter() - t0


def executor_throughput(root: Path, jobs: int) -> tuple[float, float]:
    """The same jobs through SlurmExecutor.launch, without the engine: what loradeck's
    batch script and run.sh (env, log tee, exit status) cost on the compute node."""
    home = Home.open(root / "home-executor")
    executor = SlurmExecutor(SlurmSettings(), home=home)
    t0 = time.perf_counter()
    refs = []
    for i in range(1, jobs + 1):
        folder = home.job_dir(i)
        job = Job(
            id=i,
            spec=JobSpec(name=f"x{i}", command="true", gpus=0),
            command="true",
            output_dir=folder,
            log_file=folder / "output.log",
            created_at=time.time(),
            attempts=1,
        )
        refs.append(executor.launch(job, ()))
    submitted = time.perf_counter() - t0
    ids = ",".join(refs)

    def all_ended() -> bool:
        states = executor.commands.run("squeue", "-h", "-t", "all", "-j", ids, "-o", "%T").split()
        return len(states) == jobs and all(s in ("COMPLETED", "FAILED") for s in states)

    wait(all_ended, 600, "the executor's jobs", step=0.2)
    return submitted, time.perf_counter() - t0


def settings(max_submitted: int) -> Settings:
    return Settings(
        executor=ExecutorSettings(kind="slurm"),
        scheduler=SchedulerSettings(check_interval=2.0),
        slurm=SlurmSettings(max_submitted=max_submitted),
    )


def loradeck_latency(root: Path, runs: int) -> list[float]:
    home = Home.open(root / "home-latency")
    config = settings(100)
    engine = build_engine(home, config)
    store = Store(home.root)
    engine.start()
    out = []
    try:
        for i in range(runs):
            stamp = root / f"ld-{i}"
            batch = root / f"latency-{i}.toml"
            batch.write_text(
                f"[[job]]\nname = 'lat{i}'\ngpus = 0\ncommand = '{STAMP.format(path=stamp)}'\n"
            )
            plan = load_batch(batch, config)
            t0 = time.time()
            _, (job,) = submit_plan(store, home, plan)
            engine.wake()  # as a submit in this process would; the engine also watches the store
            started = wait(partial(read_stamp, stamp), 60, f"loradeck job {i}")
            out.append(started - t0)

            def done(job_id: int = job.id) -> bool:
                store.refresh()
                return store.get(job_id).state.is_terminal

            wait(done, 60, f"loradeck job {i} to end")
    finally:
        engine.stop()
        store.close()
    return out


def loradeck_throughput(root: Path, jobs: int) -> tuple[float, float, float, int]:
    home = Home.open(root / "home-throughput")
    config = settings(jobs)
    batch = root / "throughput.toml"
    batch.write_text(
        "[defaults]\ngpus = 0\n\n[[sweep]]\nname = 'tp{i}'\ncommand = 'true'\n"
        f"grid = {{ i = {list(range(jobs))} }}\n"
    )
    plan = load_batch(batch, config)
    engine = build_engine(home, config)
    store = Store(home.root)
    engine.start()
    try:
        wall0 = time.time()
        t0 = time.perf_counter()
        _, submitted = submit_plan(store, home, plan)
        engine.wake()
        ids = [job.id for job in submitted]

        def handed() -> bool:
            store.refresh()
            return all(store.get(i).executor_ref or store.get(i).state.is_terminal for i in ids)

        wait(handed, 600, "every job handed to Slurm", step=0.05)
        handed_s = time.perf_counter() - t0

        def ended() -> bool:
            store.refresh()
            return all(store.get(i).state.is_terminal for i in ids)

        wait(ended, 600, "every loradeck job to end", step=0.2)
        total = time.perf_counter() - t0
        completed = sum(1 for i in ids if store.get(i).state == JobState.COMPLETED)
        refs = ",".join(store.get(i).executor_ref or "" for i in ids)
        ends = SlurmCommands().run("squeue", "-h", "-t", "all", "-j", refs, "-o", "%e").split()
        slurm_done = max(parse_time(end) or 0.0 for end in ends) + 1 - wall0  # 1 s resolution
    finally:
        engine.stop()
        store.close()
    return handed_s, slurm_done, total, completed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, check=False)
    if started.returncode == 3:
        print(f"bench_slurm: skipped, Slurm cannot be installed here: {started.stderr.strip()}")
        return
    if started.returncode != 0:
        sys.exit(f"bench_slurm: the dev cluster did not start:\n{started.stderr}")
    commands = SlurmCommands()
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        root = Path(tmp)
        plain = plain_latency(commands, root, args.latency_runs)
        ours = loradeck_latency(root, args.latency_runs)
        print(
            f"submit-to-start, {args.latency_runs} jobs one at a time (median / max):\n"
            f"  plain sbatch:         {statistics.median(plain):.2f} s / {max(plain):.2f} s\n"
            f"  loradeck (slurm mode): {statistics.median(ours):.2f} s / {max(ours):.2f} s"
            f"  (overhead {statistics.median(ours) - statistics.median(plain):+.2f} s)"
        )
        sub_s, plain_total = plain_throughput(commands, args.jobs)
        ex_sub, ex_total = executor_throughput(root, args.jobs)
        handed_s, slurm_done, ours_total, completed = loradeck_throughput(root, args.jobs)
        print(
            f"throughput, {args.jobs} jobs of `true` on 16 declared CPUs:\n"
            f"  plain sbatch:          all submitted in {sub_s:.1f} s, all ended in "
            f"{plain_total:.1f} s ({args.jobs / plain_total:.1f} jobs/s)\n"
            f"  executor, no engine:   all submitted in {ex_sub:.1f} s, all ended in "
            f"{ex_total:.1f} s ({args.jobs / ex_total:.1f} jobs/s): loradeck's batch script "
            "and run.sh on the node\n"
            f"  loradeck (slurm mode): all handed over in {handed_s:.1f} s, all ended in "
            f"{ours_total:.1f} s ({args.jobs / ours_total:.1f} jobs/s), {completed} completed\n"
            f"    of which Slurm had ended the last one by ~{slurm_done:.0f} s (its clock has "
            "1 s steps); the rest is loradeck seeing and recording the ends"
        )


if __name__ == "__main__":
    main()
