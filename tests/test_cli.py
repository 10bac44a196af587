"""The real `loradeck` command, in subprocesses, against a real home."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Cli, write

BATCH = """
[defaults]
gpus = 1
vram_gb = 16
retries = 2

[[job]]
name = "hero-v1"
command = "echo training"
priority = 10

[[job]]
name = "hero-merge"
command = "python merge.py"
gpus = 0
depends_on = ["hero-v1"]
"""


def _jobs(cli: Cli) -> list[dict]:
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_submit_command_after_separator(cli: Cli) -> None:
    out = cli(
        "--gpus",
        "sim:2",
        "submit",
        "--name",
        "t1",
        "--gpus",
        "1",
        "--priority",
        "5",
        "--",
        "python",
        "train.py",
        "--lr",
        "1e-4",
    )
    assert out.returncode == 0, out.stderr
    assert "submitted job 1: t1" in out.stdout
    (job,) = _jobs(cli)
    assert job["command"] == "python train.py --lr 1e-4"
    assert job["priority"] == 5
    assert job["state"] == "PENDING"
    assert job["user"]


def test_single_argument_is_a_shell_command_line(cli: Cli) -> None:
    out = cli("submit", "--gpus", "0", "--", "echo a && echo b")
    assert out.returncode == 0, out.stderr
    (job,) = _jobs(cli)
    assert job["command"] == "echo a && echo b"
    assert job["name"] == "echo"


def test_batch_then_list_and_status(cli: Cli, tmp_path: Path) -> None:
    batch = write(tmp_path / "b.toml", BATCH)
    out = cli("--gpus", "sim:4", "batch", str(batch))
    assert out.returncode == 0, out.stderr
    assert "submitted 2 jobs (1-2)" in out.stdout
    jobs = _jobs(cli)
    assert [j["name"] for j in jobs] == ["hero-v1", "hero-merge"]
    assert jobs[1]["depends_on"] == [{"job_id": 1, "condition": "afterok"}]
    assert jobs[0]["retries"] == 2 and jobs[0]["vram_gb"] == 16
    table = cli("list")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert "hero-merge" in table.stdout
    status = cli("status", "2", "--json")
    assert json.loads(status.stdout)["name"] == "hero-merge"
    assert "state: PENDING" in cli("status", "hero-v1").stdout


def test_invalid_batch_exit_2_and_nothing_stored(cli: Cli, tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", BATCH)
    assert cli("batch", str(good)).returncode == 0
    bad = write(
        tmp_path / "bad.toml", BATCH + '\n[[job]]\nname = "x"\ncommand = "true"\ngpus = -1\n'
    )
    out = cli("batch", str(bad))
    assert out.returncode == 2
    assert "bad.toml" in out.stderr and '"x"' in out.stderr and "gpus" in out.stderr
    assert len(_jobs(cli)) == 2


def test_job_that_can_never_fit_is_rejected_at_submit(cli: Cli) -> None:
    out = cli("--gpus", "sim:2x24", "submit", "--gpus", "4", "--", "true")
    assert out.returncode == 2
    assert "4" in out.stderr and "2" in out.stderr
    out = cli("--gpus", "sim:2x24", "submit", "--gpus", "1", "--vram-gb", "80", "--", "true")
    assert out.returncode == 2
    assert _jobs(cli) == []


def test_unknown_id_exit_2(cli: Cli) -> None:
    for args in (("status", "7"), ("cancel", "7"), ("hold", "nope"), ("priority", "3", "1")):
        out = cli(*args)
        assert out.returncode == 2, args
        assert "no job" in out.stderr


def test_hold_release_priority_cancel_retry(cli: Cli) -> None:
    assert cli("submit", "--name", "a", "--", "true").returncode == 0
    assert cli("hold", "1").returncode == 0
    assert _jobs(cli)[0]["state"] == "HELD"
    assert cli("release", "a").returncode == 0
    assert _jobs(cli)[0]["state"] == "PENDING"
    assert cli("priority", "1", "42").returncode == 0
    assert _jobs(cli)[0]["priority"] == 42
    assert cli("cancel", "1").returncode == 0
    job = _jobs(cli)[0]
    assert job["state"] == "CANCELLED" and job["failure_class"] == "cancelled"
    out = cli("hold", "1")
    assert out.returncode == 2 and "CANCELLED" in out.stderr
    assert cli("retry", "1").returncode == 0
    assert _jobs(cli)[0]["state"] == "PENDING"


def test_an_action_goes_on_after_a_job_it_cannot_change(cli: Cli) -> None:
    for name in ("a", "b"):
        assert cli("submit", "--name", name, "--", "true").returncode == 0
    assert cli("cancel", "a").returncode == 0
    out = cli("hold", "a", "b")
    assert out.returncode == 2
    assert out.stderr.startswith("loradeck: job 1: cannot hold: ")
    assert out.stdout.strip() == "job 2 (b): held (held by user)"
    assert [job["state"] for job in _jobs(cli)] == ["CANCELLED", "HELD"]


def test_state_filter(cli: Cli) -> None:
    for name in ("a", "b", "c"):
        assert cli("submit", "--name", name, "--", "true").returncode == 0
    cli("hold", "2")
    held = json.loads(cli("list", "--state", "held", "--json").stdout)
    assert [j["name"] for j in held] == ["b"]
    assert cli("list", "--state", "bogus").returncode == 2


def test_bad_settings_file_names_file_and_key(cli: Cli, tmp_path: Path) -> None:
    settings = write(tmp_path / "config.toml", "[scheduler]\nstrategy = 'fifo'\nmax_jobz = 3\n")
    out = cli("--config", str(settings), "list")
    assert out.returncode == 2
    assert "config.toml" in out.stderr and "max_jobz" in out.stderr


@pytest.mark.slow
def test_fifty_concurrent_submits(cli: Cli) -> None:
    procs = [
        cli.popen("submit", "--name", f"job-{i}", "--gpus", "0", "--", "true") for i in range(50)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    jobs = _jobs(cli)
    assert len(jobs) == 50
    assert sorted(j["id"] for j in jobs) == list(range(1, 51))
    assert {j["name"] for j in jobs} == {f"job-{i}" for i in range(50)}


def test_corrupt_store_is_reported_and_kept(cli: Cli, home: Path) -> None:
    assert cli("submit", "--name", "a", "--", "true").returncode == 0
    store_files = sorted(
        p
        for p in (home / "store").iterdir()
        if p.is_file() and p.stat().st_size > 0 and p.suffix == ".json"
    )
    assert store_files, "expected the store's snapshot file"
    target = store_files[0]
    target.write_bytes(b'{"jobs": {"1": {"id": 1, "spec": ')
    before = target.read_bytes()
    out = cli("list")
    assert out.returncode == 2
    assert str(target) in out.stderr
    assert target.read_bytes() == before
    out = cli("submit", "--name", "b", "--", "true")
    assert out.returncode == 2
    assert target.read_bytes() == before


def test_hostile_name_is_stored_verbatim(cli: Cli) -> None:
    name = "a'; rm -rf ~; '\n$(touch pwned)"
    out = cli("submit", "--name", name, "--", "true")
    assert out.returncode == 0, out.stderr
    assert _jobs(cli)[0]["name"] == name
    assert "\\n" in cli("list").stdout
    assert not (Path(cli.cwd) / "pwned").exists()


def test_help_and_bad_arguments(cli: Cli) -> None:
    assert cli("--help").returncode == 0
    out = cli("submit", "--gpus", "many", "--", "true")
    assert out.returncode == 2
    assert isinstance(out, subprocess.CompletedProcess)


def test_loradeck_gpus_tells_a_jobs_processes_from_foreign_ones(tmp_path: Path) -> None:
    """On real GPUs (a fake NVML here), memory held by a running job's processes is the
    job's; only the rest is foreign. The job's process is a real one, found from its
    folder the way the executor finds it."""
    import os
    import sys
    import time

    from fakes.nvml import GIB, FakeDevice, FakeNvml

    from loradeck.core.cli import gpu_report
    from loradeck.core.executor.jobfiles import AttemptInfo, JobFiles
    from loradeck.core.executor.proctree import TOKEN_VAR
    from loradeck.core.gpu import GpuInventory
    from loradeck.core.models import Job, JobSpec, JobState
    from loradeck.core.store import Store

    store = Store(tmp_path / "home")
    token = "f" * 32
    job_dir = tmp_path / "home" / "jobs" / "1"
    job = Job(
        id=1,
        spec=JobSpec(name="sdxl-a", command="sleep 60"),
        command="sleep 60",
        output_dir=job_dir,
        log_file=job_dir / "output.log",
        created_at=time.time(),
        attempts=1,
    ).transition(JobState.RUNNING, started_at=time.time(), gpu_ids=(0,))
    with store.transaction() as txn:
        txn.put(job)
    trainer = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, TOKEN_VAR: token, "LORADECK_JOB_ID": "1"},
    )
    try:
        files = JobFiles.of(job)
        files.prepare(job)
        files.write_attempt(AttemptInfo(1, token, "", time.time()))
        files.pid_file.write_text(f"{trainer.pid}\n", encoding="ascii")
        me = os.getpid()
        fake = FakeNvml(
            [FakeDevice(used_bytes=7 * GIB, processes=[(trainer.pid, 5 * GIB), (me, 1 * GIB)])]
        )
        with GpuInventory("auto", nvml=fake) as inventory:
            data = json.loads(gpu_report(store, inventory, as_json=True))
            table = gpu_report(store, inventory, as_json=False)
    finally:
        trainer.kill()
        trainer.wait()
        store.close()
    gpu = data["gpus"][0]
    assert gpu["jobs"] == ["1 sdxl-a"]
    assert {p["pid"]: p["loradeck"] for p in gpu["processes"]} == {trainer.pid: True, me: False}
    # This test's own 1 GiB; with a job on the GPU, the 1 GiB no process accounts for is
    # taken to be the job's context, not foreign.
    assert gpu["foreign_gb"] == 1.0
    assert "1 sdxl-a" in table and "1.0 GiB" in table and str(trainer.pid) not in table
