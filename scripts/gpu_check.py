"""Print this machine's GPU inventory as loradeck sees it, and what reading it costs.

Run it once on a machine with NVIDIA GPUs:

    .venv/bin/python scripts/gpu_check.py [--gpus auto|0,2|sim:4x24] [--rounds 200]

It prints the ``loradeck gpus --json`` document, the ``loradeck gpus`` table, then the
median and worst time of a full snapshot and of a per-second sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from loradeck.core.errors import GpuError
from loradeck.core.gpu import GpuInventory, format_inventory, inventory_json, parse_gpu_spec


def _timings(read: object, rounds: int) -> str:
    assert callable(read)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        read()
        times.append((time.perf_counter() - start) * 1000)
    return f"median {statistics.median(times):.3f} ms, worst {max(times):.3f} ms ({rounds} rounds)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--gpus", default="auto", help="auto, a list like 0,2,3, or sim:N / sim:NxG"
    )
    parser.add_argument("--rounds", type=int, default=200, help="readings to time")
    args = parser.parse_args(argv)
    try:
        with GpuInventory(parse_gpu_spec(args.gpus)) as inventory:
            start = time.perf_counter()
            snap = inventory.snapshot()
            first_ms = (time.perf_counter() - start) * 1000
            print(json.dumps(inventory_json(snap), indent=2))
            print()
            print(format_inventory(snap))
            print()
            print(f"first snapshot (NVML init, handles, topology): {first_ms:.3f} ms")
            print(f"snapshot(): {_timings(inventory.snapshot, args.rounds)}")
            print(f"sample():   {_timings(inventory.sample, args.rounds)}")
    except GpuError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
