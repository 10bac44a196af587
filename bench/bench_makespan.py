"""Makespan of the standard seeded workload, per strategy, with and without backfill.

The workload (``loradeck.core.scheduler.workload.standard_workload``): 500 jobs, 70% 1-GPU,
20% 2-GPU, 10% 4-GPU, log-normal durations, estimates off by a log-normal error, 10% with a
dependency, on 8 GPUs. The figure is makespan / lower bound, where the lower bound is
max(total GPU-time / GPUs, longest job, longest dependency chain).

Targets: every strategy with backfill <= 1.10, and better than plain fifo (fifo without
backfill). Seed 0 is the standard figure; seeds 1-4 show how much it moves.
"""

from __future__ import annotations

import statistics
import sys
import time

from loradeck.core.scheduler.report import compare_table
from loradeck.core.scheduler.simulate import STRATEGIES, run_strategies
from loradeck.core.scheduler.workload import standard_workload
from loradeck.core.settings import SchedulerSettings

TARGET = 1.10
SEEDS = (0, 1, 2, 3, 4)


def main() -> int:
    began = time.perf_counter()
    ratios: dict[tuple[str, bool], list[float]] = {}
    for seed in SEEDS:
        work = standard_workload(500, seed=seed)
        reports = run_strategies(work.jobs, work.durations, work.cluster, SchedulerSettings())
        for report in reports:
            ratios.setdefault((report.strategy, report.backfill), []).append(report.ratio)
        if seed == 0:
            print("standard workload (seed 0): 500 jobs on 8 GPUs")
            print(compare_table(reports))
            print()
    print(f"makespan / lower bound, seed 0 and the mean over seeds {SEEDS[0]}-{SEEDS[-1]}")
    print(f"{'strategy':<11} {'backfill on':>12} {'mean':>6} {'backfill off':>13} {'mean':>6}")
    for strategy in STRATEGIES:
        on, off = ratios[(strategy, True)], ratios[(strategy, False)]
        print(
            f"{strategy:<11} {on[0]:>12.3f} {statistics.mean(on):>6.3f} "
            f"{off[0]:>13.3f} {statistics.mean(off):>6.3f}"
        )
    plain_fifo = ratios[("fifo", False)][0]
    print()
    for strategy in STRATEGIES:
        value = ratios[(strategy, True)][0]
        meets = value <= TARGET and value < plain_fifo
        print(
            f"{strategy} with backfill: {value:.3f} "
            f"({'<=' if value <= TARGET else '>'} {TARGET:.2f}; "
            f"{'better' if value < plain_fifo else 'NOT better'} than plain fifo {plain_fifo:.3f})"
            f" -> {'meets' if meets else 'MISSES'} the target"
        )
    print(f"({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
