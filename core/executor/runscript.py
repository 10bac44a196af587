"""The per-attempt runner script ``run.sh`` and the verbatim ``command.sh``.

``run.sh`` is generated here with every value shell-quoted; nothing from a job's name,
env or paths is ever interpreted by a shell. Only the job's command is, and only as the
text of ``command.sh`` run by ``bash command.sh``. What ``run.sh`` does:

1. traps SIGINT and SIGTERM with a no-op, so that it outlives the command and can record
   its status (children get default handlers back: a trap is not inherited by ``exec``);
2. writes its pid to ``pid`` (it is the pane's process, hence the process group leader);
3. starts the bounded tee (:mod:`loradeck.core.executor.logtee`) as a coprocess: it
   copies its input to the pane and the log; the pipe back from it carries nothing but
   reaches end-of-file the moment the tee exits, which is how run.sh waits for it without
   polling (no ``sleep`` process, no latency). Where GNU coreutils are found
   (:class:`FirstStage`), ``dd | tee`` copies the first reads of the output (within the
   log's bound), ``dd`` then reads one byte ahead into ``.tee_next``, and only if the
   output goes on does the python tee start, with ``--resume``: a job that prints little
   costs small C programs instead of a python start-up (~10 ms of CPU, ~30 ms of latency);
4. in a subshell whose stdout and stderr go to the tee: exports the job's env,
   ``LORADECK_*`` and ``CUDA_*``, activates the venv or conda env, enters the workdir (a
   failure prints why, writes ``launch_error`` and exits 127) and ``exec``\\s ``bash
   command.sh``;
5. waits up to :data:`TEE_DRAIN_S` for the tee to drain (a background process the
   command left behind may keep its pipe open), then records the command's status, not
   the tee's, in ``exit_status`` by writing a temp file and renaming it.

A job that prints little costs bash (``run.sh``), ``dd`` twice, ``tee`` and ``mv``
besides its command; the python tee (started from its cached bytecode) joins once the
output outgrows the first stage.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import NO_ENV
from loradeck.core.executor.jobfiles import JobFiles
from loradeck.core.executor.logtee import LOADER
from loradeck.core.executor.proctree import TOKEN_VAR
from loradeck.core.models import Job

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The tee, run by ``python -I -S`` (so that no PYTHONPATH, PYTHONHOME or venv of the job
#: can break it) through :data:`~loradeck.core.executor.logtee.LOADER`.
LOGTEE_SCRIPT = Path(__file__).with_name("logtee.py")

#: Exit status of an attempt whose environment or workdir could not be entered.
LAUNCH_FAILED = 127

#: How long run.sh waits for the tee to drain after the command ended before it records
#: the exit status anyway (``log_status`` -1: a leftover background process holds the log).
TEE_DRAIN_S = 2.0
#: run.sh waits for the tee in slices this long (``read -t``), so that a signal it traps
#: (the kill sequence's SIGINT) cuts one slice short, not the whole wait.
_DRAIN_SLICE_S = 0.05

#: Where conda usually lives when it is not on PATH of a non-interactive shell.
_CONDA_CANDIDATES = (
    "$HOME/miniforge3/bin/conda",
    "$HOME/mambaforge/bin/conda",
    "$HOME/miniconda3/bin/conda",
    "$HOME/anaconda3/bin/conda",
    "/opt/conda/bin/conda",
)


@dataclass(frozen=True)
class FirstStage:
    """GNU coreutils ``dd`` and ``tee``, which copy the first reads of a job's output to
    the pane and the log, so that a job that prints little never starts python.

    ``dd bs=B count=N`` copies at most N reads of at most B bytes each, writing each at
    once (live output), and reads no byte past them, so the python tee goes on from the
    very next byte. N * B stays within the log's bound, where the bounded log is exactly
    the output. (``head -c`` would do too, but buffers what it writes to a pipe.)"""

    dd: str
    tee: str
    block: int = 1 << 16
    reads: int = 64

    @classmethod
    def find(cls) -> FirstStage | None:
        """GNU coreutils ``dd`` and ``tee`` from PATH, or None if either is missing or is
        another implementation (busybox, BSD). Runs each with ``--version`` once."""
        found: list[str] = []
        for name in ("dd", "tee"):
            path = shutil.which(name)
            if path is None:
                return None
            try:
                done = subprocess.run(
                    [path, "--version"], capture_output=True, timeout=5, check=False
                )
            except (OSError, subprocess.SubprocessError):
                return None
            # "dd (coreutils) 9.1", "tee (GNU coreutils) 9.1", then the FSF's copyright
            # (uutils' Rust coreutils say "coreutils" too, but not that).
            gnu = b"coreutils" in done.stdout and b"Free Software Foundation" in done.stdout
            if done.returncode != 0 or not gnu:
                return None
            found.append(path)
        return cls(dd=found[0], tee=found[1])


@dataclass(frozen=True)
class RunSpec:
    """Everything ``run.sh`` needs for one attempt."""

    job: Job
    attempt: int
    gpu_ids: tuple[int, ...]
    token: str
    python: str
    max_log_bytes: int
    extra_env: Mapping[str, str] = field(default_factory=lambda: NO_ENV)
    close_on_success_with: str | None = None
    """Absolute path of tmux: on success, run.sh turns remain-on-exit off for its own
    pane so that the window closes. None keeps the window."""
    gpus_from_var: str | None = None
    """A shell variable that holds the job's GPU list when run.sh runs (the Slurm executor's,
    filled from what Slurm gave the job): ``CUDA_VISIBLE_DEVICES`` is exported from it
    instead of from ``gpu_ids``. None uses ``gpu_ids``."""
    first_stage: FirstStage | None = None
    """Copy the first bytes of the output with these (see :class:`FirstStage`); None
    starts the python tee at once."""
    launch_guard: bool = False
    """run.sh runs nothing (it says so and exits 0) unless ``LORADECK_RUN_TOKEN`` in its
    environment is ``token`` and ``attempt.json`` holds ``token``: a window opened late,
    for a launch the executor gave up on or for an earlier attempt, cannot run the job.
    The tmux executor writes ``attempt.json`` before it opens the window."""


def loradeck_env(spec: RunSpec) -> dict[str, str]:
    """The variables every attempt gets, which the job's own env cannot override."""
    job = spec.job
    return {
        "LORADECK_JOB_ID": str(job.id),
        "LORADECK_JOB_NAME": job.name,
        "LORADECK_OUTPUT_DIR": str(job.output_dir),
        "LORADECK_LOG_FILE": str(job.log_file),
        "LORADECK_ATTEMPT": str(spec.attempt),
        "LORADECK_RUN_TOKEN": spec.token,
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in spec.gpu_ids),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def render_run_script(spec: RunSpec) -> str:
    """The text of ``run.sh``."""
    job = spec.job
    files = JobFiles.of(job)
    q = shlex.quote
    user_env = {"PYTHONUNBUFFERED": "1", **job.spec.env, **spec.extra_env}
    for name, value in {**user_env, **loradeck_env(spec)}.items():
        _check_env(job, name, value)
    workdir = Path(job.spec.workdir) if job.spec.workdir is not None else Path(job.output_dir)
    activation = _activation_lines(job)

    lines = [
        "#!/usr/bin/env bash",
        f"# Generated by loradeck for job {job.id}, attempt {spec.attempt}; rewritten at launch.",
        "# Every value is quoted; the job's command is in command.sh, read by bash only.",
        f"__ld_dir={q(str(files.folder))}",
        f"__ld_attempt={spec.attempt}",
        "",
        "__ld_own_env() {",
        *(_export_line(spec, name, value) for name, value in loradeck_env(spec).items()),
        "}",
        "",
        "__ld_fail() {",
        "  printf '[loradeck] %s\\n' \"$1\" >&2",
        '  printf \'%s\\n\' "$1" > "$__ld_dir/launch_error"',
        f"  exit {LAUNCH_FAILED}",
        "}",
        "",
        "__ld_record() {",
        "  local code=$1 sig=null now tmp",
        "  if (( code > 128 && code < 193 )); then sig=$(( code - 128 )); fi",
        "  now=${EPOCHREALTIME:-$(date +%s)}",
        "  now=${now/,/.}",  # EPOCHREALTIME follows the locale's decimal point
        '  tmp="$__ld_dir/.exit_status.$$.tmp"',
        '  printf \'{"attempt": %d, "exit_code": %d, "signal": %s, "ended_at": %s, '
        '"log_status": %d}\\n\' "$__ld_attempt" "$code" "$sig" "$now" "$2" > "$tmp" \\',
        '    && mv -f -- "$tmp" "$__ld_dir/exit_status"',
        "}",
        "",
        *(_guard_lines(spec) if spec.launch_guard else []),
        "trap ':' INT TERM",
        'printf \'%s\\n\' "$$" > "$__ld_dir/pid"',
        "# The tee: input from __ld_in, output to the pane; __ld_done reaches end-of-file",
        "# when it exits (it alone holds the other end, as __ld_alive).",
        "exec {__ld_pane}>&1",
        "coproc __ld_tee {",
        '  exec {__ld_alive}>&1 >&"$__ld_pane" {__ld_pane}>&-',
        *_tee_lines(spec),
        "}",
        "__ld_tee_pid=$__ld_tee_PID",
        'exec {__ld_in}>&"${__ld_tee[1]}" {__ld_done}<&"${__ld_tee[0]}"',
        "exec {__ld_tee[1]}>&- {__ld_tee[0]}<&-",
        "(",
        *(f"  export {name}={q(value)}" for name, value in user_env.items()),
        "  __ld_own_env",
        *activation,
        *(["  __ld_own_env"] if activation else []),  # an activate script may reset them
        f"  cd -- {q(str(workdir))} || __ld_fail {q(f'cannot enter the workdir {workdir}')}",
        f'  exec "$BASH" -- {q(str(files.command_script))}',
        ') >&"$__ld_in" 2>&1 {__ld_in}>&- {__ld_done}<&- {__ld_pane}>&-',
        "__ld_code=$?",
        "exec {__ld_in}>&- {__ld_pane}>&-",
        "# The tee ends once every writer of its pipe is gone. A background process that",
        "# the command left running may hold it open: wait for the tee briefly, not for that.",
        "__ld_tee_status=-1",
        f"for (( __ld_i = 0; __ld_i < {round(TEE_DRAIN_S / _DRAIN_SLICE_S)}; __ld_i++ )); do",
        f'  read -r -t {_DRAIN_SLICE_S} -u "$__ld_done" __ld_line',
        '  if (( $? == 1 )); then wait "$__ld_tee_pid"; __ld_tee_status=$?; break; fi',
        "done",
        "exec {__ld_done}<&-",
        '__ld_record "$__ld_code" "$__ld_tee_status"',
        f"printf '\\n[loradeck] job {job.id} exited with status %s\\n' \"$__ld_code\"",
    ]
    if spec.close_on_success_with is not None:
        tmux = q(spec.close_on_success_with)
        lines += [
            'if [ "$__ld_code" = 0 ] && [ -n "${TMUX_PANE:-}" ]; then',
            f'  {tmux} set-option -w -t "$TMUX_PANE" remain-on-exit off >/dev/null 2>&1',
            "fi",
        ]
    lines.append('exit "$__ld_code"')
    return "\n".join(lines) + "\n"


def _tee_lines(spec: RunSpec) -> list[str]:
    """The body of the tee coprocess (see the module docstring)."""
    log = str(spec.job.log_file)
    python = [spec.python, "-I", "-S", "-c", LOADER, str(LOGTEE_SCRIPT.parent)]
    python += ["--max-bytes", str(spec.max_log_bytes)]
    stage = spec.first_stage
    if stage is None:
        return [f"  exec {shlex.join([*python, '--', log])}"]
    q = shlex.quote
    dd, tee = q(stage.dd), q(stage.tee)
    # Within the bound, where the bounded log is exactly the output.
    block = min(stage.block, spec.max_log_bytes // stage.reads)
    ahead = '"$__ld_dir/.tee_next"'
    return [
        "  trap '' INT TERM HUP",
        f"  {dd} bs={block} count={stage.reads} status=none | {tee} -p -- {q(log)}",
        "  __ld_s=$?",
        f"  {dd} bs=1 count=1 status=none > {ahead}",
        f"  [ -s {ahead} ] || exit $__ld_s",
        f"  exec {shlex.join(python)} --resume {ahead} -- {q(log)}",
    ]


def _guard_lines(spec: RunSpec) -> list[str]:
    """See :attr:`RunSpec.launch_guard`; builtins only (no process is started)."""
    token = shlex.quote(spec.token)
    return [
        "__ld_info=",
        '{ IFS= read -r __ld_info < "$__ld_dir/attempt.json"; } 2>/dev/null',
        f'if [ "${{{TOKEN_VAR}-}}" != {token} ] || [[ $__ld_info != *{token}* ]]; then',
        "  printf '[loradeck] this window belongs to a launch that was given up on or to "
        "an earlier attempt of job %s; nothing was run\\n' "
        f"{spec.job.id}",
        "  exit 0",
        "fi",
    ]


def _export_line(spec: RunSpec, name: str, value: str) -> str:
    if name == "CUDA_VISIBLE_DEVICES" and spec.gpus_from_var is not None:
        if not spec.gpus_from_var.isidentifier():
            raise ValueError(f"gpus_from_var must be a shell variable name: {spec.gpus_from_var!r}")
        return f'  export CUDA_VISIBLE_DEVICES="${{{spec.gpus_from_var}-}}"'
    return f"  export {name}={shlex.quote(value)}"


def write_run_files(spec: RunSpec) -> JobFiles:
    """Write ``run.sh`` (0700) and ``command.sh`` (0600, the command verbatim)."""
    files = JobFiles.of(spec.job)
    script = render_run_script(spec)
    command = spec.job.command if spec.job.command.endswith("\n") else spec.job.command + "\n"
    for path, text, mode in (
        (files.command_script, command, 0o600),
        (files.run_script, script, 0o700),
    ):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError as err:
            raise ExecutorError(
                f"job {spec.job.id}: {path.name} would hold text that is not valid unicode "
                f"({err.reason}); fix the job's name, command or env"
            ) from err
        except OSError as err:
            raise ExecutorError(f"job {spec.job.id}: cannot write {path}: {err}") from err
    return files


def _activation_lines(job: Job) -> list[str]:
    q = shlex.quote
    if job.spec.venv is not None:
        activate = Path(job.spec.venv) / "bin" / "activate"
        return [
            f"  [ -f {q(str(activate))} ] || __ld_fail "
            + q(f"no virtual environment at {job.spec.venv} ({activate} is missing)"),
            f"  . {q(str(activate))} || __ld_fail {q(f'cannot activate {activate}')}",
        ]
    if job.spec.conda is not None:
        env = job.spec.conda
        candidates = " ".join(f'"{c}"' for c in _CONDA_CANDIDATES)
        return [
            "  __ld_conda=$(command -v conda 2>/dev/null)",
            '  [ -x "$__ld_conda" ] || __ld_conda=${CONDA_EXE:-}',
            f"  for __ld_c in {candidates}; do",
            '    [ -x "$__ld_conda" ] && break; __ld_conda=$__ld_c',
            "  done",
            '  [ -x "$__ld_conda" ] || __ld_fail '
            + q(
                f"conda is not installed or not found (looked on PATH, $CONDA_EXE and the "
                f"usual install folders), so the conda env {env!r} cannot be activated"
            ),
            '  eval "$("$__ld_conda" shell.bash hook)" || __ld_fail '
            + q("conda shell.bash hook failed"),
            f"  conda activate {q(env)} || __ld_fail {q(f'conda activate {env} failed')}",
        ]
    return []


def _check_env(job: Job, name: str, value: str) -> None:
    if not _ENV_NAME_RE.match(name):
        raise ExecutorError(
            f"job {job.id}: {name!r} is not a valid environment variable name "
            "(letters, digits and _, not starting with a digit)"
        )
    if "\x00" in value:
        raise ExecutorError(f"job {job.id}: environment variable {name} contains a NUL byte")
