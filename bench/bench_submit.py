"""Issue 2 benchmark: submit one batch file of 10,000 jobs (target <= 2 s).

Runs the real `loradeck batch FILE` in a subprocess against a fresh home, so process
start-up, parsing, validation, sweep expansion, dependency resolution and the durable
store write are all counted. Also times the in-process path on its own.

    .venv/bin/python bench/bench_submit.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_batch(path: Path, jobs: int) -> None:
    # 10 sweeps of 1,000 combinations each, plus a few plain jobs with dependencies.
    per = jobs // 10
    side = 10
    lines = ["[defaults]", "gpus = 1", "vram_gb = 16", "retries = 1", ""]
    for s in range(10):
        dims = list(range(1, side + 1))
        lrs = [round(1e-4 * (i + 1), 6) for i in range(per // side)]
        lines += [
            "[[sweep]]",
            f'name = "sweep{s}-r{{rank}}-lr{{lr}}"',
            'command = "python train.py --rank {rank} --lr {lr}"',
            f"priority = {s}",
            f"grid = {{ rank = {dims}, lr = {lrs} }}",
            "",
        ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = root / "big.toml"
        write_batch(batch, args.jobs)
        home = root / "home"
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "loradeck.core.cli", "--home", str(home), "batch", str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t0
        print(out.stdout.strip())
        count = out.stdout.split("submitted ")[1].split(" jobs")[0]
        print(
            f"submit {count} jobs via `loradeck batch` (new process, durable): {wall:.2f} s (target <= 2 s)"
        )

        from loradeck.core.batch import load_batch
        from loradeck.core.home import Home
        from loradeck.core.settings import Settings
        from loradeck.core.store import Store
        from loradeck.core.submit import submit_plan

        t0 = time.perf_counter()
        plan = load_batch(batch, Settings())
        t1 = time.perf_counter()
        home2 = Home.open(root / "home2")
        store = Store(home2.root)
        t2 = time.perf_counter()
        submit_plan(store, home2, plan)
        t3 = time.perf_counter()
        store.close()
        print(
            f"in-process: parse+validate+expand {t1 - t0:.3f} s, open store {t2 - t1:.3f} s, "
            f"store {len(plan.jobs)} jobs {t3 - t2:.3f} s"
        )


if __name__ == "__main__":
    main()
