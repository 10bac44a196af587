"""Run one real CUDA training job through loradeck and check it is seen for what it is.

Run it once on a machine with an NVIDIA GPU and tmux:

    .venv/bin/python scripts/monitor_gpu_check.py [--steps 400] [--vram-gb 6]

It starts ``loradeck --run-batch`` (real engine, tmux executor on a private socket,
``--gpus auto``) on a batch of one job: a small torch trainer on ``cuda`` that holds a few
GiB and prints kohya's progress bar. While the job runs it checks, through the same
library calls the engine and ``loradeck gpus`` make, that:

- NVML lists the trainer among the GPU's compute processes, with its memory;
- that pid is in the job's process tree as the tmux executor finds it (so the VRAM
  counts as the job's, not as foreign);
- the job's ``CUDA_VISIBLE_DEVICES`` is the GPU the scheduler gave it;
- the engine parsed step, total and loss from the live log.

Then it waits for the batch to end and prints the job's final status. Exit status 0 when
every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from loradeck.core.cli import demo_batch_path
from loradeck.core.executor.tmux import TmuxExecutor
from loradeck.core.gpu import GpuInventory, format_inventory, inventory_json
from loradeck.core.models import JobState
from loradeck.core.store import Store

TRAINER = textwrap.dedent(
    '''
    """A tiny CUDA trainer that prints kohya's bar and holds some VRAM."""
    import argparse, math, os, sys, time
    import torch
    sys.path.insert(0, os.environ["TOY_DIR"])
    from toy_console import ProgressBar

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--vram-gb", type=float, default=6.0)
    a = p.parse_args()
    dev = torch.device("cuda")
    ballast = torch.empty(int(a.vram_gb * 2**30), dtype=torch.uint8, device=dev)
    ballast.fill_(1)
    torch.manual_seed(0)
    w = torch.randn(1024, 1024, device=dev)
    down = torch.zeros(1024, 16, device=dev, requires_grad=True)
    up = torch.randn(16, 1024, device=dev, requires_grad=True)
    opt = torch.optim.AdamW([down, up], lr=1e-3)
    x = torch.randn(256, 1024, device=dev)
    target = x @ (w + 0.01 * torch.randn_like(w))
    print(f"running training / 学習開始 on {torch.cuda.get_device_name(0)}", flush=True)
    bar = ProgressBar("steps", total=a.steps, stream=sys.stdout)
    avg = None
    for step in range(1, a.steps + 1):
        loss = torch.nn.functional.mse_loss(x @ (w + down @ up), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = float(loss)
        avg = value if avg is None else 0.9 * avg + 0.1 * value
        bar.update(1)
        bar.set_postfix(avr_loss=avg)
        time.sleep(0.05)
    bar.close()
    print(f"model saved. final loss {avg:.5f}", flush=True)
    '''
)


def _cli(home: Path, config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loradeck.core.cli",
        "--home",
        str(home),
        "--config",
        str(config),
        *args,
    ]


def _check(ok: bool, what: str, failures: list[str]) -> None:
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--vram-gb", type=float, default=6.0)
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds for it all")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("monitor_gpu_check: tmux is not on PATH", file=sys.stderr)
        return 1
    toy_dir = demo_batch_path().parent
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="loradeck-gpucheck-") as tmp_text:
        tmp = Path(tmp_text)
        home, work = tmp / "home", tmp / "work"
        work.mkdir()
        (work / "gpu_trainer.py").write_text(TRAINER, encoding="utf-8")
        socket = f"loradeck-gpucheck-{os.getpid()}"
        config = tmp / "config.toml"
        config.write_text(
            f'[executor]\ntmux_session = "gpucheck"\ntmux_socket = "{socket}"\n'
            '[resources]\ngpus = "auto"\n',
            encoding="utf-8",
        )
        batch = work / "batch.toml"
        command = (
            f"{json.dumps(sys.executable)} gpu_trainer.py --steps {args.steps} "
            f"--vram-gb {args.vram_gb}"
        )
        batch.write_text(
            "[[job]]\n"
            'name = "gpu-check"\n'
            f"command = {json.dumps(command)}\n"
            "gpus = 1\n"
            f"vram_gb = {args.vram_gb + 4}\n"
            'parser = "kohya"\n'
            f"env = {{ TOY_DIR = {json.dumps(str(toy_dir))} }}\n",
            encoding="utf-8",
        )
        started = time.monotonic()
        engine = subprocess.Popen(
            _cli(home, config, "--run-batch", str(batch)),
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            seen = _watch(home, socket, args, started, engine, failures)
        finally:
            try:
                out, _ = engine.communicate(
                    timeout=max(10.0, args.deadline - (time.monotonic() - started))
                )
            except subprocess.TimeoutExpired:
                engine.kill()
                out, _ = engine.communicate()
                failures.append("the batch did not finish before the deadline")
        print("\n--- loradeck --run-batch output (tail) ---")
        print("\n".join(out.splitlines()[-25:]))
        _check(
            engine.returncode == 0, f"--run-batch exit status 0 (got {engine.returncode})", failures
        )
        status = subprocess.run(
            _cli(home, config, "status", "1", "--json"), capture_output=True, text=True, check=False
        )
        final: dict[str, Any] = json.loads(status.stdout) if status.returncode == 0 else {}
        print("\n--- final status (selected fields) ---")
        print(
            json.dumps(
                {
                    k: final.get(k)
                    for k in ("state", "exit_code", "progress", "gpu_ids", "attempts")
                },
                indent=2,
            )
        )
        _check(final.get("state") == "COMPLETED", "the job ended COMPLETED", failures)
        _check(seen, "the running job was matched to its GPU process", failures)
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    print("\nRESULT:", "all checks held" if not failures else f"{len(failures)} failed: {failures}")
    return 0 if not failures else 1


def _watch(
    home: Path,
    socket: str,
    args: argparse.Namespace,
    started: float,
    engine: subprocess.Popen[str],
    failures: list[str],
) -> bool:
    """Poll until the job runs with parsed progress and a GPU process; check the mapping."""
    store = Store(home)
    executor = TmuxExecutor(session="gpucheck", socket_name=socket)
    told = False
    try:
        with GpuInventory("auto") as inventory:
            while time.monotonic() - started < args.deadline and engine.poll() is None:
                jobs = store.jobs()
                job = jobs[0] if jobs else None
                if job is not None and job.state.is_terminal:
                    print(f"the job ended before it could be checked: {job.state} {job.reason}")
                    return False
                if (
                    job is None
                    or job.state != JobState.RUNNING
                    or job.progress is None
                    or not job.progress.step
                ):
                    time.sleep(0.5)
                    continue
                snap = inventory.snapshot()
                gpu_procs = {p.pid: p for g in snap.gpus for p in g.processes}
                pids = set(executor.pids(job))
                mine = sorted(pids & gpu_procs.keys())
                if not mine and not told:
                    told = True
                    print(
                        f"job {job.id} at step {job.progress.step}: its process tree is "
                        f"{sorted(pids)}; NVML lists compute processes {sorted(gpu_procs)} "
                        "(waiting for them to meet)"
                    )
                if not mine:
                    time.sleep(0.5)
                    continue
                print(f"job {job.id} running on GPU {job.gpu_ids}, progress {job.progress}")
                print(
                    f"job process tree: {sorted(pids)}; NVML compute processes: {sorted(gpu_procs)}"
                )
                jobs_by_gpu = {g: [f"{job.id} {job.name}"] for g in job.gpu_ids}
                print(format_inventory(snap, jobs_by_gpu, loradeck_pids=pids))
                doc = inventory_json(snap, jobs_by_gpu, loradeck_pids=pids)
                print(json.dumps(doc["gpus"], indent=2))
                used = sum(gpu_procs[p].used_gb for p in mine)
                _check(
                    used >= args.vram_gb * 0.9,
                    f"NVML shows the trainer holding {used:.2f} GiB (>= {args.vram_gb * 0.9:.1f})",
                    failures,
                )
                on = {g.index for g in snap.gpus for p in g.processes if p.pid in pids}
                _check(
                    on == set(job.gpu_ids),
                    f"its GPU {sorted(on)} is the one it was given {list(job.gpu_ids)}",
                    failures,
                )
                foreign = [
                    p
                    for g in doc["gpus"]
                    for p in g["processes"]
                    if p["pid"] in pids and not p["loradeck"]
                ]
                _check(
                    not foreign,
                    "loradeck counts the trainer's VRAM as the job's, not foreign",
                    failures,
                )
                env = Path(f"/proc/{mine[0]}/environ").read_bytes().split(b"\0")
                cvd = [e.decode() for e in env if e.startswith(b"CUDA_VISIBLE_DEVICES=")]
                _check(
                    cvd == [f"CUDA_VISIBLE_DEVICES={','.join(map(str, job.gpu_ids))}"],
                    f"the trainer's {cvd}",
                    failures,
                )
                progress = job.progress
                _check(
                    progress.total_steps == args.steps and progress.loss is not None,
                    f"progress parsed live: step {progress.step}/{progress.total_steps}, "
                    f"loss {progress.loss}",
                    failures,
                )
                return True
    finally:
        store.close()
    failures.append("no running job with a GPU process was seen before the deadline")
    return False


if __name__ == "__main__":
    sys.exit(main())
