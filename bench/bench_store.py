"""Store figures: one 10,000-job transaction, durable update latency, size and RSS.

Run: ``.venv/bin/python bench/bench_store.py``. Targets (from the issue): p95 of one
durable state transition <= 20 ms with 10,000 jobs stored; adding 10,000 jobs in one
transaction well under 1 s (the whole batch submit must take <= 2 s).
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loradeck.core.models import Job, JobSpec, JobState
from loradeck.core.store import Store, StoreTuning

N = 10_000
UPDATES = 1_000

_RSS_SCRIPT = """
import sys, time, psutil
from pathlib import Path
before = psutil.Process().memory_info().rss
from loradeck.core.store import Store
imported = psutil.Process().memory_info().rss
start, cpu = time.perf_counter(), time.process_time()
store = Store(Path(sys.argv[1]))
opened, opened_cpu = time.perf_counter() - start, time.process_time() - cpu
rss_open = psutil.Process().memory_info().rss
start = time.perf_counter()
jobs = store.jobs(active_only=True)
parsed = time.perf_counter() - start
rss_jobs = psutil.Process().memory_info().rss
print(imported, rss_open, opened, len(jobs), parsed, rss_jobs, opened_cpu)
"""


def make_job(home: Path, job_id: int, now: float) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(
            name=f"sweep-lr{job_id % 7}-r{job_id}",
            command="accelerate launch train_network.py --config_file {config}",
            tags=["bench", "sweep"],
            env={"CUDA_LAUNCH_BLOCKING": "0"},
            vram_gb=12.0,
            est_minutes=45,
        ),
        command=f"accelerate launch train_network.py --config_file {home}/jobs/{job_id}/cfg.toml",
        output_dir=home / "jobs" / str(job_id),
        log_file=home / "jobs" / str(job_id) / "output.log",
        created_at=now,
    )


def add_jobs(
    store: Store, home: Path, count: int, state: JobState | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds to add ``count`` jobs in one transaction (building them not
    counted)."""
    now = time.time()
    with store.transaction() as txn:
        ids = [txn.next_job_id() for _ in range(count)]
        jobs = [make_job(home, i, now) for i in ids]
        if state is not None:
            jobs = [
                j.transition(JobState.RUNNING, started_at=now - 7200).transition(
                    state, ended_at=now - 7000, exit_code=0
                )
                for j in jobs
            ]
        start, cpu = time.perf_counter(), time.process_time()
        for job in jobs:
            txn.put(job)
    return time.perf_counter() - start, time.process_time() - cpu


def update_latencies(store: Store, count: int, *, durable: bool = True) -> list[float]:
    """RUNNING <-> PENDING flips of random active jobs, one transaction each (fsync'd
    unless ``durable`` is False)."""
    rng = random.Random(7)
    active = [job.id for job in store.jobs(active_only=True)]
    latencies = []
    for _ in range(count):
        job_id = rng.choice(active)

        def flip(job: Job) -> Job:
            if job.state is JobState.RUNNING:
                return job.transition(JobState.PENDING, reason="requeued")
            return job.transition(JobState.RUNNING, started_at=time.time(), gpu_ids=(0,))

        start = time.perf_counter()
        store.update(job_id, flip, durable=durable)
        latencies.append(time.perf_counter() - start)
    return latencies


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def report_latencies(label: str, latencies: list[float], *, target: bool = True) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    goal = "; target p95 <= 20 ms" if target else ""
    print(f"  {label}: p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {ms[-1]:.1f} ms (n={len(ms)}{goal})")


def rss_of_fresh_process(home: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(home)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    imported, rss_open, opened, count, parsed, rss_jobs, opened_cpu = out
    mib = 1 << 20
    print(f"  fresh process, after imports: RSS {int(imported) / mib:.1f} MiB")
    print(
        f"  open the store: {float(opened) * 1000:.0f} ms (CPU {float(opened_cpu) * 1000:.0f} ms), "
        f"RSS {int(rss_open) / mib:.1f} MiB "
        f"(+{(int(rss_open) - int(imported)) / mib:.1f} MiB)"
    )
    print(
        f"  then jobs(active_only=True) -> {count} Job objects: {float(parsed) * 1000:.0f} ms, "
        f"RSS {int(rss_jobs) / mib:.1f} MiB"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="loradeck-bench-") as tmp:
        home = Path(tmp) / "home"
        store = Store(home)
        print(f"== store bench: {N:,} jobs (temp home {home})")

        seconds, cpu = add_jobs(store, home, N)
        print(
            f"add {N:,} jobs in ONE transaction (durable commit): {seconds * 1000:.0f} ms "
            f"(CPU {cpu * 1000:.0f} ms)"
        )
        [first] = update_latencies(store, 1)
        print(f"  the next update, which does the compaction left over: {first * 1000:.0f} ms")

        report_latencies(f"durable update, {N:,} jobs stored", update_latencies(store, UPDATES))
        report_latencies(
            "update with durable=False (no fsync; for bookkeeping)",
            update_latencies(store, UPDATES, durable=False),
            target=False,
        )
        start = time.perf_counter()
        store.sync()
        print(
            f"  then one sync() makes them all durable: {(time.perf_counter() - start) * 1000:.1f} ms"
        )
        start = time.perf_counter()
        store.compact()
        print(f"  one compaction of {N:,} jobs: {(time.perf_counter() - start) * 1000:.0f} ms")

        print(f"store size on disk, {N:,} jobs: {dir_size(home / 'store') / (1 << 20):.1f} MiB")
        print(f"fresh process opening the {N:,}-job store:")
        rss_of_fresh_process(home)
        store.close()

        # 10,000 finished jobs that the next compaction archives, then 10,000 active ones.
        home2 = Path(tmp) / "home2"
        store = Store(home2, StoreTuning(archive_after=3600))
        add_jobs(store, home2, N, state=JobState.COMPLETED)
        store.compact()
        seconds, cpu = add_jobs(store, home2, N)
        print(
            f"add {N:,} jobs in ONE transaction, {N:,} archived: {seconds * 1000:.0f} ms "
            f"(CPU {cpu * 1000:.0f} ms)"
        )
        report_latencies(
            f"durable update, {N:,} jobs + {N:,} archived", update_latencies(store, UPDATES)
        )
        print(
            f"store size on disk, {N:,} jobs + {N:,} archived: "
            f"{dir_size(home2 / 'store') / (1 << 20):.1f} MiB"
        )
        print(f"fresh process opening that store ({N:,} active, {N:,} archived):")
        rss_of_fresh_process(home2)
        start = time.perf_counter()
        found = store.find_by_name("sweep-lr3-r10")
        print(
            f"  find_by_name of an archived job (loads the archive): "
            f"{(time.perf_counter() - start) * 1000:.0f} ms -> job {found.id if found else None}"
        )
        store.close()


if __name__ == "__main__":
    main()
