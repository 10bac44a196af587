"""The engine in Slurm mode (executor.kind = "slurm") on the real single-node Slurm:
hand-over, Slurm's states and reasons, cancel, timeout, retries, refusals, restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, wait_for, write
from slurm_fixtures import SlurmCluster, cancel_home_jobs
from slurm_helpers import SlurmHarness, slurm_settings

from loradeck.core.actions import cancel_job
from loradeck.core.batch import load_batch
from loradeck.core.executor.slurm_states import parse_scontrol_job
from loradeck.core.home import Home
from loradeck.core.models import FailureClass, Job, JobState
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo"
TINY_TOY = """\
network_dim = 4
network_alpha = 4
learning_rate = 1e-2
train_batch_size = 8
max_train_epochs = 2
seed = 3
dataset_size = 64
validation_split = 0.25
output_name = "tiny"
save_every_n_epochs = 1
"""
TINY_STEPS = 12  # 48 training images / batch 8 = 6 steps per epoch, 2 epochs


@pytest.fixture
def slurm_engine(slurm_home: Home) -> Iterator[SlurmHarness]:
    """An engine in Slurm mode, started, in this process."""
    h = SlurmHarness(slurm_home)
    h.engine.start()
    yield h
    h.engine.stop()
    h.store.close()


def slurm_record(cluster: SlurmCluster, ref: str | None) -> str:
    assert ref is not None
    return cluster.scontrol_job(ref)


@pytest.fixture
def shared_engine(slurm_home: Home, tmp_path: Path) -> Iterator[SlurmHarness]:
    """An engine in Slurm mode whose job folders live on a shared root (not the home)."""
    shared = tmp_path / "shared"
    home = Home(slurm_home.root, shared_root=shared)
    h = SlurmHarness(home, slurm_settings(shared_root=str(shared)))
    h.engine.start()
    yield h
    h.engine.stop()
    h.store.close()


def test_fast_demo_batch_runs_through_slurm(
    shared_engine: SlurmHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    slurm_engine = shared_engine
    jobs_dir = tmp_path / "shared" / f"loradeck-{slurm_engine.home.key}" / "jobs"
    write(tmp_path / "tiny.toml", TINY_TOY)
    batch = f"""
[defaults]
gpus = 1
workdir = {json.dumps(str(DEMO))}

[[sweep]]
name = "toy-lr{{learning_rate}}"
command = "\\"${{LORADECK_PYTHON:-python3}}\\" toy_lora.py --config_file {{config}}"
config = "tiny.toml"
parser = "kohya"

[sweep.grid]
learning_rate = [3e-3, 3e-2]

[[job]]
name = "report"
gpus = 0
depends_on = ["toy-lr{{learning_rate}}"]
command = "echo all toy runs finished"
"""
    *sweep, report = slurm_engine.submit(batch, tmp_path)
    for submitted in (*sweep, report):
        job = slurm_engine.wait(submitted.id, JobState.COMPLETED, JobState.FAILED, timeout=120)
        assert job.state == JobState.COMPLETED, (job.reason, job.log_file.read_text()[-2000:])
        assert job.exit_code == 0 and job.attempts == 1
        record = slurm_record(slurm_cluster, job.executor_ref)
        assert "JobState=COMPLETED" in record and "ExitCode=0:0" in record
    trained = [slurm_engine.job(job.id) for job in sweep]
    for job in trained:
        # The compute node wrote the log on the shared root; the engine followed it there.
        assert job.log_file == jobs_dir / str(job.id) / "output.log"
        assert list(job.job_dir.glob("slurm-*.out"))
        progress = job.progress
        assert progress is not None, job.log_file.read_text()[-2000:]
        assert progress.step == TINY_STEPS and progress.total_steps == TINY_STEPS
        assert progress.loss is not None
        metrics = (job.job_dir / "metrics.jsonl").read_text().splitlines()
        assert TINY_STEPS in [json.loads(line).get("step") for line in metrics]
        assert list(job.output_dir.glob("*.safetensors"))
    assert not slurm_engine.home.root.joinpath("jobs").exists()
    # The report was handed over with a Slurm dependency on both runs, and Slurm kept it.
    finished = slurm_engine.job(report.id)
    script = (finished.job_dir / "slurm.sh").read_text()
    by_id = {job.id: job.executor_ref or "" for job in trained}
    refs = [by_id[dep.job_id] for dep in finished.deps]
    assert f'"--dependency=afterok:{":".join(refs)}"' in script
    started = parse_scontrol_job(slurm_record(slurm_cluster, finished.executor_ref))
    ends = [parse_scontrol_job(slurm_record(slurm_cluster, ref)) for ref in refs]
    assert started is not None and started.start is not None
    assert all(end is not None and end.end is not None and end.end <= started.start for end in ends)
    assert finished.log_file.read_text().strip() == "all toy runs finished"


def test_two_2gpu_jobs_run_while_a_third_waits_for_slurm(
    slurm_engine: SlurmHarness, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    job_text = (
        "[[job]]\nname = 'g{i}'\ngpus = 2\n"
        f"command = 'echo gpus=$CUDA_VISIBLE_DEVICES; while [ ! -e {flag} ]; do sleep 0.1; done'\n"
    )
    jobs = slurm_engine.submit("".join(job_text.format(i=i) for i in range(3)), tmp_path)
    for job in jobs:
        slurm_engine.wait(job.id, JobState.RUNNING)  # all three are in Slurm...

    def split() -> tuple[list[Job], list[Job]] | None:
        current = [slurm_engine.job(job.id) for job in jobs]
        running = [j for j in current if j.reason.startswith("slurm: RUNNING")]
        waiting = [j for j in current if j.reason == "slurm: PENDING (Resources)"]
        return (running, waiting) if len(running) == 2 and len(waiting) == 1 else None

    found = wait_for(split, 60, "two jobs running in Slurm and one pending on Resources")
    assert isinstance(found, tuple)
    running, _ = found
    gpu_sets = []
    for job in running:

        def first_line(log: Path = job.log_file) -> str:
            return log.read_text().strip()

        line = wait_for(first_line, 30, "the GPU line")
        assert isinstance(line, str)
        gpu_sets.append(set(line.removeprefix("gpus=").split(",")))
    assert all(len(s) == 2 for s in gpu_sets) and not gpu_sets[0] & gpu_sets[1]
    flag.touch()
    for job in jobs:
        assert slurm_engine.wait(job.id, JobState.COMPLETED, JobState.FAILED).state == (
            JobState.COMPLETED
        )


def test_cancel_a_running_job(
    slurm_engine: SlurmHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    (job,) = slurm_engine.submit(
        "[[job]]\nname = 'long'\ngpus = 1\ncommand = 'sleep 300'\n", tmp_path
    )
    running = slurm_engine.wait_reason(job.id, "slurm: RUNNING")
    slurm_engine.store.update(job.id, lambda current: cancel_job(current, time.time()))
    slurm_engine.engine.wake()
    cancelled = slurm_engine.wait(job.id, JobState.CANCELLED, timeout=60)
    assert cancelled.failure_class == FailureClass.CANCELLED
    assert running.executor_ref is not None
    assert slurm_cluster.squeue(running.executor_ref)[running.executor_ref].state == "CANCELLED"


def test_failing_job_is_retried_by_resubmission(slurm_engine: SlurmHarness, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt-done"
    command = f"if [ ! -e {marker} ]; then touch {marker}; echo first; exit 4; fi; echo second"
    (job,) = slurm_engine.submit(
        f"[[job]]\nname = 'flaky'\ngpus = 0\nretries = 1\nretry_backoff = 0.5\n"
        f"command = {json.dumps(command)}\n",
        tmp_path,
    )
    done = slurm_engine.wait(job.id, JobState.COMPLETED, JobState.FAILED, timeout=90)
    assert done.state == JobState.COMPLETED and done.attempts == 2
    outs = sorted(done.job_dir.glob("slurm-*.out"))
    assert len(outs) == 2  # two Slurm jobs, one per attempt
    assert done.executor_ref is not None and done.executor_ref in outs[-1].name
    assert done.log_file.read_text().strip() == "second"
    assert (done.job_dir / "output.log.1").read_text().strip() == "first"
    assert any(e.kind == "job_retrying" for e in slurm_engine.events)


def test_dependency_failure_follows_loradecks_rules(
    slurm_engine: SlurmHarness, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    batch = (
        f"[[job]]\nname = 'first'\ngpus = 0\n"
        f"command = 'while [ ! -e {flag} ]; do sleep 0.1; done; exit 2'\n"
        "[[job]]\nname = 'second'\ngpus = 0\ndepends_on = ['first']\ncommand = 'echo ran'\n"
    )
    first, second = slurm_engine.submit(batch, tmp_path)
    slurm_engine.wait_reason(second.id, "slurm: PENDING (Dependency)")
    flag.touch()
    assert slurm_engine.wait(first.id, JobState.FAILED).exit_code == 2
    dropped = slurm_engine.wait(second.id, JobState.CANCELLED)
    assert dropped.failure_class == FailureClass.DEPENDENCY
    assert dropped.reason == f"dependency {first.id} failed"
    assert "ran" not in dropped.log_file.read_text()


@pytest.mark.timeout(240)
def test_time_limit_gives_timeout(
    slurm_engine: SlurmHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Slurm's smallest limit is a minute, checked every ~30 s: this takes 60-90 s."""
    (job,) = slurm_engine.submit(
        "[[job]]\nname = 'slow'\ngpus = 0\ntimeout = '1m'\ncommand = 'sleep 600'\n", tmp_path
    )
    ended = slurm_engine.wait(job.id, JobState.TIMEOUT, JobState.FAILED, timeout=200)
    assert ended.state == JobState.TIMEOUT and ended.failure_class == FailureClass.TIMEOUT
    record = slurm_record(slurm_cluster, ended.executor_ref)
    assert "JobState=TIMEOUT" in record and "Reason=TimeLimit" in record


def test_sbatch_refusal_fails_the_job_with_slurms_message(slurm_home: Home, tmp_path: Path) -> None:
    h = SlurmHarness(slurm_home, slurm_settings(partition="nope"))
    h.engine.start()
    try:
        (job,) = h.submit("[[job]]\nname = 'x'\ngpus = 1\ncommand = 'true'\n", tmp_path)
        failed = h.wait(job.id, JobState.FAILED)
        assert failed.failure_class == FailureClass.LAUNCH
        assert "invalid partition" in failed.reason.lower()
        assert failed.executor_ref is None and failed.attempts == 1
        assert h.executor.adopt() == {}  # nothing half-submitted
        assert h.engine.running
    finally:
        h.engine.stop()
        h.store.close()


def _serve(home: Path) -> subprocess.Popen[str]:
    """An engine in its own process (killed by the test), in Slurm mode."""
    code = (
        "import sys, time\n"
        "from loradeck.core.home import Home\n"
        "from loradeck.core.runtime import build_engine\n"
        "from loradeck.core.settings import ExecutorSettings, SchedulerSettings, Settings\n"
        "settings = Settings(executor=ExecutorSettings(kind='slurm'),\n"
        "                    scheduler=SchedulerSettings(check_interval=2.0))\n"
        "engine = build_engine(Home.open(sys.argv[1]), settings)\n"
        "engine.start()\n"
        "print('serving', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True
    )


def test_killed_loradeck_adopts_its_slurm_jobs(
    slurm_home: Home, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    runs, flag = tmp_path / "runs", tmp_path / "go"
    runs.mkdir()
    jobs_text = "".join(
        f"[[job]]\nname = 'j{i}'\ngpus = 0\n"
        f"command = 'echo $SLURM_JOB_ID >> {runs}/j{i}; "
        f"while [ ! -e {flag}{i} ]; do sleep 0.1; done'\n"
        for i in range(3)
    )
    store = Store(slurm_home.root)
    settings = slurm_settings()
    path = write(tmp_path / "batch.toml", jobs_text)
    _, jobs = submit_plan(store, slurm_home, load_batch(path, settings))
    first = _serve(slurm_home.root)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "serving"
        wait_for(lambda: len(list(runs.iterdir())) == 3, 60, "all three jobs to start in Slurm")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    (tmp_path / "go0").touch()  # one ends while no loradeck watches
    refs = {job.id: store.get(job.id).executor_ref for job in jobs}
    assert all(refs.values())
    wait_for(
        lambda: slurm_cluster.squeue(refs[jobs[0].id] or "")[refs[jobs[0].id] or ""].ended,
        30,
        "the first job to end in Slurm",
    )
    again = SlurmHarness(slurm_home, settings)
    again.engine.start()
    try:
        adopted = {getattr(e, "job_id", 0) for e in again.events if e.kind == "job_adopted"}
        assert adopted == {jobs[1].id, jobs[2].id}
        assert again.wait(jobs[0].id, JobState.COMPLETED).executor_ref == refs[jobs[0].id]
        (tmp_path / "go1").touch()
        (tmp_path / "go2").touch()
        for job in jobs:
            done = again.wait(job.id, JobState.COMPLETED)
            assert done.attempts == 1 and done.executor_ref == refs[job.id]
        for i in range(3):
            assert (runs / f"j{i}").read_text().count("\n") == 1  # each ran once
    finally:
        again.engine.stop()
        again.store.close()
        store.close()
        cancel_home_jobs(slurm_home, slurm_cluster.commands)


def test_cli_runs_a_batch_through_slurm(slurm_home: Home, cli: Cli, tmp_path: Path) -> None:
    batch = write(
        tmp_path / "batch.toml",
        "[[job]]\nname = 'a'\ngpus = 1\ncommand = 'echo a on $CUDA_VISIBLE_DEVICES'\n"
        "[[job]]\nname = 'b'\ngpus = 0\ndepends_on = ['a']\ncommand = 'echo b'\n",
    )
    assert cli.home == slurm_home.root
    out = cli("--executor", "slurm", "--run-batch", str(batch), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = json.loads(cli("list", "--json").stdout)
    assert [(job["name"], job["state"]) for job in listing] == [
        ("a", "COMPLETED"),
        ("b", "COMPLETED"),
    ]
    for job in listing:  # each ran as a Slurm job
        assert len(list(slurm_home.job_dir(job["id"]).glob("slurm-*.out"))) == 1
    assert "a on " in (slurm_home.job_dir(listing[0]["id"]) / "output.log").read_text()


def test_attach_follows_the_log_when_there_is_no_window(
    slurm_engine: SlurmHarness, tmp_path: Path
) -> None:
    from loradeck.core.facade import LiveFacade

    facade = LiveFacade(slurm_engine.home, slurm_engine.settings, engine=slurm_engine.engine)
    (job,) = slurm_engine.submit(
        '[[job]]\nname = "tail"\ncommand = "sleep 60"\ngpus = 1\n', tmp_path
    )
    running = slurm_engine.wait(job.id, JobState.RUNNING)
    plan = facade.attach_plan(running, {})
    assert plan.argv == ("tail", "-n", "200", "-F", str(running.log_file))
    assert plan.suspend
    slurm_engine.store.update(job.id, lambda j: cancel_job(j, time.time()))
    slurm_engine.wait(job.id, JobState.CANCELLED)


def test_cli_puts_job_folders_on_the_shared_root(
    slurm_home: Home, cli: Cli, tmp_path: Path
) -> None:
    """slurm.shared_root from the settings file: job folders go there, the compute node
    writes the logs there, and a job whose folder is elsewhere is refused, clearly."""
    shared = tmp_path / "shared"
    config = write(
        tmp_path / "config.toml",
        f'[executor]\nkind = "slurm"\n[slurm]\nshared_root = {json.dumps(str(shared))}\n',
    )
    # Submitted in tmux mode: its folder is in the home, which the nodes need not see.
    assert cli("submit", "--name", "outside", "--gpus", "0", "--", "true").returncode == 0
    batch = write(
        tmp_path / "batch.toml",
        "[[job]]\nname = 'a'\ngpus = 1\ncommand = 'echo a on $(hostname)'\n"
        "[[job]]\nname = 'b'\ngpus = 0\ndepends_on = ['a']\ncommand = 'echo b'\n",
    )
    out = cli("--config", str(config), "--run-batch", str(batch), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = {job["name"]: job for job in json.loads(cli("list", "--json").stdout)}
    jobs_dir = shared / f"loradeck-{slurm_home.key}" / "jobs"
    for name in ("a", "b"):
        job = listing[name]
        assert job["state"] == "COMPLETED"
        folder = jobs_dir / str(job["id"])
        assert Path(job["log_file"]) == folder / "output.log"
        assert (folder / "output.log").read_text().startswith(f"{name}")
        assert len(list(folder.glob("slurm-*.out"))) == 1
        assert not slurm_home.job_dir(job["id"]).exists()
    outside = cli("--config", str(config), "status", "outside", "--json")
    refused = json.loads(outside.stdout)
    assert refused["state"] == "FAILED" and refused["failure_class"] == "launch"
    assert "is not under slurm.shared_root" in refused["reason"]
    assert "submit it again" in refused["reason"]
