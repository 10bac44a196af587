"""The batch script and the sbatch command line of one attempt.

The job's folder gets, besides what the tmux executor writes (``run.sh``, ``command.sh``,
``attempt.json``; see :mod:`loradeck.core.executor.jobfiles`):

==================  ================================================================
``slurm.sh``        the batch script handed to sbatch: says where it runs, then
                    ``exec bash run.sh`` (so env, venv/conda, ``LORADECK_*``, the log
                    and the per-attempt exit status work exactly as in tmux)
``slurm-<id>.out``  sbatch's ``--output``: the script's own lines and Slurm's
                    messages (``CANCELLED ... DUE TO TIME LIMIT``); the job's output
                    goes to its log, as with tmux
==================  ================================================================

Every sbatch option is an argument of sbatch (never an ``#SBATCH`` line, never text a
shell reads), so a job name, partition or comment cannot change what runs.
``run.sh`` is the tmux executor's, with one change: ``CUDA_VISIBLE_DEVICES`` is the one
Slurm gives the job (it picks the GPUs), not one loradeck chose.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.jobfiles import JobFiles
from loradeck.core.executor.runscript import RunSpec, write_run_files
from loradeck.core.executor.tmux import safe_window_name
from loradeck.core.models import DependencyCondition, Job
from loradeck.core.settings import SlurmSettings

BATCH_SCRIPT = "slurm.sh"
OUTPUT_PATTERN = "slurm-%j.out"
#: The variable through which slurm.sh hands Slurm's GPU choice to run.sh.
GPUS_VAR = "LORADECK_SLURM_GPUS"
COMMENT_PREFIX = "loradeck"
_COMMENT_RE = re.compile(r"^loradeck:([0-9a-f]{6,64}):([0-9]+):([0-9]+)$")
_OPTION_RE = re.compile(r"^--?[A-Za-z]")


@dataclass(frozen=True)
class JobTagComment:
    """What the ``--comment`` of a loradeck job says: which home, job and attempt."""

    home_key: str
    job_id: int
    attempt: int

    def text(self) -> str:
        return f"{COMMENT_PREFIX}:{self.home_key}:{self.job_id}:{self.attempt}"

    @classmethod
    def parse(cls, text: str) -> JobTagComment | None:
        found = _COMMENT_RE.match(text.strip())
        if found is None:
            return None
        return cls(found.group(1), int(found.group(2)), int(found.group(3)))


def slurm_job_name(job: Job) -> str:
    """``ld-12-toy-r4-lr0_01``: the job's id and name, safe anywhere Slurm shows it."""
    return f"ld-{safe_window_name(job.id, job.name)}"


def time_limit(seconds: float) -> str:
    """sbatch's ``--time`` for a timeout: whole minutes, rounded up (Slurm's resolution;
    its smallest limit is one minute)."""
    minutes = max(1, math.ceil(seconds / 60 - 1e-9))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def nice_for(priority: int) -> int | None:
    """``--nice`` for a loradeck priority: a negative priority lowers the job in Slurm's
    queue too (anyone may); a positive one is only loradeck's hand-over order, since
    raising a job above others (negative nice) is for Slurm operators."""
    return -priority if priority < 0 else None


def dependency_option(after: Sequence[tuple[DependencyCondition, str]]) -> str | None:
    """``afterok:12:13,afterany:14`` (every condition must hold), or None."""
    if not after:
        return None
    grouped: dict[str, list[str]] = {}
    for condition, slurm_id in after:
        grouped.setdefault(condition.value, []).append(slurm_id)
    return ",".join(f"{cond}:{':'.join(ids)}" for cond, ids in grouped.items())


def check_extra_options(options: Sequence[str]) -> None:
    """Each ``slurm.extra_sbatch`` item must be one option (``--constraint=a100``)."""
    for option in options:
        if not _OPTION_RE.match(option) or "\n" in option or "\x00" in option:
            raise ExecutorError(
                f"slurm.extra_sbatch: {option!r} is not an sbatch option; write each option "
                'as one item starting with "-", e.g. extra_sbatch = ["--constraint=a100", '
                '"--exclusive"] (config.toml)',
                title="invalid settings",
            )


def sbatch_args(
    job: Job,
    *,
    settings: SlurmSettings,
    comment: str,
    after: Sequence[tuple[DependencyCondition, str]] = (),
) -> list[str]:
    """sbatch's arguments for the current attempt of ``job`` (the script path last)."""
    check_extra_options(settings.extra_sbatch)
    folder = Path(job.job_dir)
    # In --output, % starts a replacement (%j); %% is a literal %.
    output = str(folder).replace("%", "%%") + "/" + OUTPUT_PATTERN
    spec = job.spec
    args = [
        "--parsable",
        f"--job-name={slurm_job_name(job)}",
        f"--comment={comment}",
        f"--output={output}",
        f"--chdir={folder}",
        # loradeck retries by resubmitting; a Slurm requeue would rerun the same attempt.
        "--no-requeue",
        # A dependency that can no longer be satisfied ends the job at once, whatever the
        # site's DependencyParameters, and loradeck's own rules take over.
        "--kill-on-invalid-dep=yes",
    ]
    if spec.gpus:
        args.append(f"--gres=gpu:{spec.gpus}")
    if spec.cpus is not None:
        args.append(f"--cpus-per-task={spec.cpus}")
    if spec.mem_gb is not None:
        args.append(f"--mem={math.ceil(spec.mem_gb * 1024)}M")
    if spec.timeout is not None:
        args.append(f"--time={time_limit(spec.timeout)}")
    if (nice := nice_for(spec.priority)) is not None:
        args.append(f"--nice={nice}")
    for option, value in (
        ("--partition", settings.partition),
        ("--account", settings.account),
        ("--qos", settings.qos),
    ):
        if value:
            args.append(f"{option}={value}")
    if (dependency := dependency_option(after)) is not None:
        args.append(f"--dependency={dependency}")
    args.extend(settings.extra_sbatch)
    args.append(str(folder / BATCH_SCRIPT))
    return args


def render_batch_script(job: Job, attempt: int, sbatch: Sequence[str] = ()) -> str:
    """The text of ``slurm.sh``; ``sbatch`` (its options) is written in as a comment."""
    files = JobFiles.of(job)
    q = shlex.quote
    gpus = '"${CUDA_VISIBLE_DEVICES-}"' if job.spec.gpus else "''"
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Generated by loradeck for job {job.id}, attempt {attempt}: the batch script",
            "# given to sbatch. Its options are sbatch's arguments; run.sh does the rest.",
            # JSON: no option text can end the comment line.
            f"# sbatch arguments: {json.dumps(list(sbatch))}",
            "printf '[loradeck] job %s attempt %s: Slurm job %s on %s, GPUs %s\\n' \\",
            f'  {job.id} {attempt} "${{SLURM_JOB_ID-?}}" "$(hostname)" '
            '"${CUDA_VISIBLE_DEVICES-none}"',
            f"export {GPUS_VAR}={gpus}",
            "# The job's output goes to its log (run.sh tees it there); this file keeps",
            "# only these lines and Slurm's own messages.",
            f"exec bash -- {q(str(files.run_script))} > /dev/null",
            "",
        ]
    )


def write_batch_files(spec: RunSpec, sbatch: Sequence[str] = ()) -> Path:
    """Write ``run.sh`` and ``command.sh`` (the tmux executor's, GPUs from Slurm) and
    ``slurm.sh`` (``sbatch``: its arguments, for people); the path of ``slurm.sh``."""
    job = spec.job
    if job.spec.gpus:
        spec = replace(spec, gpus_from_var=GPUS_VAR)
    files = write_run_files(spec)
    script = files.folder / BATCH_SCRIPT
    _write_script(script, render_batch_script(job, spec.attempt, sbatch), job)
    return script


def _write_script(path: Path, text: str, job: Job) -> None:
    """Write an executable script (0700) by renaming a temp file over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ExecutorError(f"job {job.id}: cannot write {path}: {err}") from err
