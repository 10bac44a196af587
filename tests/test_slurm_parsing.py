"""What Slurm prints, parsed; what it means for an attempt; sbatch's command line. No
Slurm needed: the texts are the ones Slurm 22.05 printed on the dev cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import AttemptResult, AttemptStatus
from loradeck.core.executor.slurm_nodes import gpu_count, parse_sinfo, split_gres
from loradeck.core.executor.slurm_script import (
    JobTagComment,
    check_extra_options,
    dependency_option,
    render_batch_script,
    sbatch_args,
    slurm_job_name,
    time_limit,
)
from loradeck.core.executor.slurm_states import (
    SlurmJob,
    attempt_result,
    base_state,
    parse_config,
    parse_exit_code,
    parse_key_values,
    parse_sacct,
    parse_scontrol_job,
    parse_squeue,
    parse_time,
)
from loradeck.core.models import Dependency, DependencyCondition, Job, JobSpec
from loradeck.core.settings import SlurmSettings

SQUEUE = """\
7|PENDING|Resources|N/A|N/A|debug|0|gres:gpu:2||(null)|ld-3-z
8|PENDING|Dependency|N/A|N/A|debug|0|N/A||(null)|wrap
5|RUNNING|None|2026-11-28T14:33:42|NONE|debug|0|gres:gpu:2|vm|loradeck:0123abcd4567:1:1|ld-1-a|b
9|CANCELLED|DependencyNeverSatisfied|N/A|2026-11-28T14:34:13|debug|0|N/A||(null)|dep
garbage line
"""

SCONTROL = (
    "JobId=7 JobName=ld-3-z UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901753 "
    "Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) "
    "Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 TimeLimit=UNLIMITED "
    "StartTime=2026-11-28T14:34:12 EndTime=2026-11-28T14:34:12 Partition=debug "
    "AllocNode:Sid=localhost:1138 NodeList=vm BatchHost=vm NumNodes=1 "
    "TRES=cpu=1,mem=128M,node=1,billing=1 Comment=loradeck:0123abcd4567:3:2  "
    "StdOut=/tmp/sl/7.out Power= TresPerNode=gres:gpu:2 \n"
)


def make_job(tmp_path: Path, **spec: object) -> Job:
    fields: dict[str, object] = {"name": "toy r4", "command": "echo hi", **spec}
    folder = tmp_path / "jobs" / "3"
    return Job(
        id=3,
        spec=JobSpec.model_validate(fields),
        command="echo hi",
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=time.time(),
        attempts=2,
    )


def test_squeue_rows() -> None:
    rows = parse_squeue(SQUEUE)
    assert set(rows) == {"5", "7", "8", "9"}
    assert rows["7"].state == "PENDING" and rows["7"].reason == "Resources"
    assert rows["7"].describe() == "slurm: PENDING (Resources)"
    assert rows["7"].start is None  # squeue's %S of a pending job is a forecast
    running = rows["5"]
    assert running.describe() == "slurm: RUNNING on vm"
    assert running.start == time.mktime(time.strptime("2026-11-28T14:33:42", "%Y-%m-%dT%H:%M:%S"))
    assert running.name == "ld-1-a|b"  # the name is last: it may hold the separator
    assert JobTagComment.parse(running.comment) == JobTagComment("0123abcd4567", 1, 1)
    assert rows["9"].ended and not rows["9"].ran


def test_scontrol_job_line() -> None:
    job = parse_scontrol_job(SCONTROL)
    assert job is not None
    assert (job.state, job.reason, job.exit_code) == ("FAILED", "NonZeroExitCode", "3:0")
    assert job.comment == "loradeck:0123abcd4567:3:2"
    assert job.gres == "gres:gpu:2"
    assert parse_scontrol_job("slurm_load_jobs error: Invalid job id specified") is None


def test_key_values_keep_spaces_and_equals() -> None:
    fields = parse_key_values("NodeName=n1 Reason=Not responding [slurm@2026] TRES=cpu=1,mem=2G")
    assert fields == {
        "NodeName": "n1",
        "Reason": "Not responding [slurm@2026]",
        "TRES": "cpu=1,mem=2G",
    }


def test_sacct_rows_skip_steps() -> None:
    text = "7|FAILED|3:0|2026-11-28T14:34:12|2026-11-28T14:34:12|||vm\n7.batch|FAILED|3:0||||\n"
    text += "8|CANCELLED by 0|0:0|2026-11-28T14:34:13|2026-11-28T14:34:13|||(null)\n"
    rows = parse_sacct(text)
    assert set(rows) == {"7", "8"}
    assert rows["8"].state == "CANCELLED" and not rows["8"].ran


def test_exit_codes_and_states() -> None:
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:15") == (143, 15)
    assert parse_exit_code("0:0") == (0, None)
    assert parse_exit_code("x") == (None, None)
    assert base_state("CANCELLED by 1000") == "CANCELLED"
    assert base_state("RUNNING+") == "RUNNING"
    assert parse_time("Unknown") is None
    assert (
        parse_config("KillWait                = 5 sec\nJobCompType = jobcomp/filetxt")["KillWait"]
        == "5 sec"
    )


def _row(
    state: str, reason: str = "", exit_code: str | None = "0:0", nodes: str = "vm"
) -> SlurmJob:
    return SlurmJob("12", state, reason=reason, exit_code=exit_code, nodes=nodes)


@pytest.mark.parametrize(
    ("state", "reason", "exit_code", "expected"),
    [
        ("PENDING", "Resources", None, {"status": AttemptStatus.RUNNING}),
        ("COMPLETING", "", None, {"status": AttemptStatus.RUNNING}),
        ("COMPLETED", "", "0:0", {"status": AttemptStatus.EXITED, "exit_code": 0}),
        ("FAILED", "NonZeroExitCode", "3:0", {"exit_code": 3, "slurm_state": "FAILED"}),
        ("CANCELLED", "", "0:15", {"cancelled": True, "exit_code": 143, "signal": 15}),
        ("TIMEOUT", "TimeLimit", "0:15", {"timed_out": True}),
        ("DEADLINE", "", "0:15", {"timed_out": True}),
        ("OUT_OF_MEMORY", "", "0:125", {"oom": True}),
        ("NODE_FAIL", "", "0:0", {"lost": True}),
        ("PREEMPTED", "", "0:15", {"lost": True}),
    ],
)
def test_states_map_to_attempt_results(
    state: str, reason: str, exit_code: str | None, expected: dict[str, object]
) -> None:
    result = attempt_result(_row(state, reason, exit_code), None)
    for key, value in expected.items():
        assert getattr(result, key) == value, key
    assert result.reason is not None and result.reason.startswith(f"slurm: {state}")


def test_never_satisfied_dependency_is_given_back() -> None:
    row = _row("CANCELLED", "DependencyNeverSatisfied", nodes="")
    result = attempt_result(row, None)
    assert result.dependency_never_satisfied and not result.cancelled


def test_recorded_status_wins_over_slurms() -> None:
    recorded = AttemptResult(
        AttemptStatus.EXITED, exit_code=127, launch_error="no virtual environment at /x"
    )
    result = attempt_result(_row("FAILED", "NonZeroExitCode", "127:0"), recorded)
    assert (result.exit_code, result.launch_error) == (127, "no virtual environment at /x")


@given(st.text(max_size=400))
@example("¹:²")  # str.isdigit() says yes, int() says no
@example("١٢|RUNNING|None|N/A|N/A|p|0|N/A||loradeck:0123abcd4567:١:٢|x")
@example("vm|idle|p|1/2/0/3|1|0|gpu:٣|gpu:99999999999999999999|none|")
def test_parsers_never_crash(text: str) -> None:
    parse_squeue(text)
    parse_sacct(text)
    parse_scontrol_job(text)
    parse_config(text)
    parse_sinfo(text)
    gpu_count(text)
    parse_exit_code(text)
    JobTagComment.parse(text)


def test_sinfo_nodes_and_gres() -> None:
    nodes = parse_sinfo(
        "vm|mixed|debug*|1/15/0/16|16000|128|gpu:4|gpu:2(IDX:0-1)|none|\n"
        "n2|drained|gpu|0/64/0/64|512000|0|gpu:a100:8(S:0-1)|gpu:a100:0(IDX:N/A)|Kill task failed|\n"
    )
    assert [(n.name, n.gpus_used, n.gpus_total, n.cpus_used) for n in nodes] == [
        ("vm", 2, 4, 1),
        ("n2", 0, 8, 0),
    ]
    assert nodes[0].default_partition and nodes[1].reason == "Kill task failed"
    assert list(split_gres("gpu:a100:2(IDX:0,3),shard:4")) == ["gpu:a100:2(IDX:0,3)", "shard:4"]
    assert gpu_count("gres:gpu:2") == 2
    assert gpu_count("(null)") == 0


def test_sbatch_args(tmp_path: Path) -> None:
    job = make_job(
        tmp_path, gpus=2, cpus=4, mem_gb=1.5, timeout="90s", priority=-5, retries=1
    ).evolve(deps=(Dependency(job_id=1),))
    settings = SlurmSettings(
        partition="gpu", account="lab", qos="high", extra_sbatch=["--constraint=a100"]
    )
    args = sbatch_args(
        job,
        settings=settings,
        comment="loradeck:0123abcd4567:3:2",
        after=[(DependencyCondition.AFTEROK, "11"), (DependencyCondition.AFTERANY, "12")],
    )
    folder = tmp_path / "jobs" / "3"
    assert args == [
        "--parsable",
        "--job-name=ld-3-toy_r4",
        "--comment=loradeck:0123abcd4567:3:2",
        f"--output={folder}/slurm-%j.out",
        f"--chdir={folder}",
        "--no-requeue",
        "--kill-on-invalid-dep=yes",
        "--gres=gpu:2",
        "--cpus-per-task=4",
        "--mem=1536M",
        "--time=0-00:02:00",
        "--nice=5",
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--dependency=afterok:11,afterany:12",
        "--constraint=a100",
        f"{folder}/slurm.sh",
    ]
    assert slurm_job_name(job) == "ld-3-toy_r4"


def test_output_path_escapes_percent(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    weird = job.evolve(log_file=tmp_path / "a%j" / "output.log")
    args = sbatch_args(weird, settings=SlurmSettings(), comment="c")
    assert f"--output={tmp_path}/a%%j/slurm-%j.out" in args


def test_time_limits_round_up_to_minutes() -> None:
    assert time_limit(1) == "0-00:01:00"
    assert time_limit(60) == "0-00:01:00"
    assert time_limit(61) == "0-00:02:00"
    assert time_limit(3 * 86400 + 3600) == "3-01:00:00"
    assert dependency_option([]) is None


def test_bad_extra_options_are_refused() -> None:
    with pytest.raises(ExecutorError, match="extra_sbatch"):
        check_extra_options(["--exclusive", "a100"])
    check_extra_options(["-Ca100", "--exclusive"])


def test_batch_script_takes_gpus_from_slurm(tmp_path: Path) -> None:
    gpu_job = make_job(tmp_path, gpus=1)
    assert 'export LORADECK_SLURM_GPUS="${CUDA_VISIBLE_DEVICES-}"' in render_batch_script(
        gpu_job, 2
    )
    cpu_job = make_job(tmp_path, gpus=0)
    assert "export LORADECK_SLURM_GPUS=''" in render_batch_script(cpu_job, 2)
