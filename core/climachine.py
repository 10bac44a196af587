"""``loradeck`` commands that run or plan work and show the machine: the headless
engine (``--run-batch``, ``serve``, ``demo``), ``simulate`` and ``gpus``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradeck.core.clicontext import EXIT_OK, Context
from loradeck.core.errors import ValidationError
from loradeck.core.models import JobState
from loradeck.core.settings import Settings
from loradeck.core.store import Store

if TYPE_CHECKING:
    from loradeck.core.gpu import GpuInventory

# --------------------------------------------------------------------------- engine


def _engine(ctx: Context, *, gpus: str | None = None, session: str | None = None) -> Any:
    from loradeck.core.runtime import build_engine

    return build_engine(
        ctx.home,
        ctx.settings,
        gpus=gpus or ctx.args.gpus_spec,
        tmux_session=session or ctx.args.tmux_session,
        tmux_socket=ctx.args.tmux_socket,
    )


def cmd_run_batch(ctx: Context) -> int:
    from loradeck.core.headless import run_batch

    path = Path(ctx.args.run_batch).expanduser().absolute()
    return run_batch(
        path,
        home=ctx.home,
        settings=ctx.settings,
        engine=_engine(ctx),
        fresh=ctx.args.fresh,
        cancel_on_exit=ctx.args.cancel_on_exit,
    )


def cmd_serve(ctx: Context) -> int:
    from loradeck.core.headless import serve

    return serve(_engine(ctx))


def demo_batch_path() -> Path:
    """The demo batch shipped with loradeck (configs/demo/batch.toml)."""
    from importlib.resources import files

    return Path(str(files("loradeck.configs") / "demo" / "batch.toml"))


def demo_settings(settings: Settings) -> Settings:
    """The demo scores its own checkpoints: an evaluation job after each training job."""
    evaluation = settings.evaluation.model_copy(update={"auto_evaluate": True})
    return settings.model_copy(update={"evaluation": evaluation})


def cmd_demo(ctx: Context) -> int:
    from loradeck.core.headless import run_batch

    gpus = ctx.args.gpus_spec or "sim:4"
    session = ctx.args.tmux_session or "loradeck-demo"
    print(
        f"loradeck demo: a toy LoRA sweep on {gpus} GPUs; state in {ctx.home.root}; "
        f"watch the jobs with: tmux attach -t {session}",
        file=sys.stderr,
    )
    ctx.settings = demo_settings(ctx.settings)
    return run_batch(
        demo_batch_path(),
        home=ctx.home,
        settings=ctx.settings,
        engine=_engine(ctx, gpus=gpus, session=session),
        fresh=ctx.args.fresh,
        cancel_on_exit=ctx.args.cancel_on_exit,
    )


def cmd_simulate(ctx: Context) -> int:
    """Plan a batch: durations from est_minutes, GPUs from --gpus (default sim:8)."""
    from loradeck.core.batch import load_batch
    from loradeck.core.clusterview import cluster_from_snapshot
    from loradeck.core.gpu import GpuInventory
    from loradeck.core.scheduler import compare_strategies, simulate

    plan = load_batch(Path(ctx.args.file).expanduser().absolute(), ctx.settings)
    inventory = GpuInventory(ctx.args.gpus_spec or "sim:8")
    try:
        cluster = cluster_from_snapshot(inventory.snapshot(), ctx.settings)
    finally:
        inventory.close()
    if not cluster.gpus:
        raise ValidationError("simulate: no GPUs to plan for; use --gpus sim:N (e.g. sim:8)")
    updates: dict[str, Any] = {}
    if ctx.args.strategy:
        updates["strategy"] = ctx.args.strategy
    if ctx.args.no_backfill:
        updates["backfill"] = False
    scheduler = ctx.settings.scheduler.model_copy(update=updates)
    specs = [planned.spec for planned in plan.jobs]
    if ctx.args.compare:
        print(compare_strategies(specs, None, cluster, scheduler))
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        print(simulate(specs, None, cluster, scheduler).format_text(width=width))
    return EXIT_OK


def cmd_gpus(ctx: Context) -> int:
    if ctx.settings.executor.kind == "slurm":
        return _slurm_nodes(ctx)
    from loradeck.core.gpu import GpuInventory

    with GpuInventory(ctx.args.gpus_spec or ctx.settings.resources.gpus) as inventory:
        print(gpu_report(ctx.store, inventory, as_json=ctx.args.json))
    return EXIT_OK


def gpu_report(store: Store, inventory: GpuInventory, *, as_json: bool) -> str:
    """``loradeck gpus``: the inventory with each GPU's loradeck jobs; on real GPUs the
    running jobs' processes are told apart from foreign ones."""
    from loradeck.core.clusterview import local_job_pids, sim_usage
    from loradeck.core.gpu import format_inventory, inventory_json

    running = [job for job in store.jobs(active_only=True) if job.state == JobState.RUNNING]
    jobs_by_gpu: dict[int, list[str]] = {}
    for job in running:
        for gpu in job.gpu_ids:
            jobs_by_gpu.setdefault(gpu, []).append(f"{job.id} {job.name}")
    snapshot = inventory.snapshot(sim_usage=sim_usage(inventory.spec, running))
    pids = set() if inventory.spec.simulated else local_job_pids(running)
    if as_json:
        return json.dumps(inventory_json(snapshot, jobs_by_gpu, loradeck_pids=pids), indent=2)
    return format_inventory(snapshot, jobs_by_gpu, loradeck_pids=pids)


def _slurm_nodes(ctx: Context) -> int:
    """In Slurm mode the GPUs are the partition's: its nodes as sinfo shows them."""
    import dataclasses

    from loradeck.core.executor.slurm import SlurmExecutor

    executor = SlurmExecutor(ctx.settings.slurm, home=ctx.home)
    nodes = executor.nodes()
    if ctx.args.json:
        print(json.dumps([dataclasses.asdict(node) for node in nodes], indent=2))
        return EXIT_OK
    where = ctx.settings.slurm.partition or "every partition"
    if not nodes:
        print(f"no Slurm nodes in {where}")
        return EXIT_OK
    rows = [("NODE", "PARTITION", "STATE", "GPUS", "CPUS", "MEM GiB", "REASON")]
    for node in nodes:
        rows.append(
            (
                node.name,
                node.partition,
                node.state,
                f"{node.gpus_used}/{node.gpus_total}",
                f"{node.cpus_used}/{node.cpus_total}",
                f"{node.mem_used_mb / 1024:.1f}/{node.mem_total_mb / 1024:.1f}",
                node.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"Slurm nodes of {where} (GPUs, CPUs and memory: in use/total)")
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK
