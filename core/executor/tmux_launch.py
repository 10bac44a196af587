"""Open job windows in tmux: one tmux call for every window a scheduling pass starts.

For each launch, ``new-window -a`` after the session's last window runs ``bash run.sh``
(an argv that tmux runs directly, without a shell; ``new-session`` with the first one when
there is no server or session yet), then ``set-option`` on ``{end}`` (that same window:
it is the last one) sets ``remain-on-exit`` and the options that tie it to its job. tmux
runs a command list without returning to its event loop, where it would notice a pane's
exit, so the window stays however fast its command ends. The window ids that tmux prints
and a final ``display-message`` per window say which windows were made and whether their
options landed on them (a user's ``after-new-window`` hook could move ``{end}``: then they
are set again by window id).

A launch that tmux failed or did not answer is given up on: its ``attempt.json`` is
removed and whatever carries its token is killed. ``run.sh`` runs nothing unless it finds
its own token there and in its environment, so a window that tmux opens late, even once
the job has been retried, can never run the job a second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.jobfiles import JobFiles
from loradeck.core.executor.proctree import JOB_ID_VAR, TOKEN_VAR, kill_tree
from loradeck.core.executor.tmux_server import TmuxGoneError, TmuxServer
from loradeck.core.models import Job

_MAX_CALL_BYTES = 8000
"""Arguments per tmux call: a client sends them in one message of at most 16 KiB."""


class WindowOpener:
    """Opens job windows in one tmux session of one server."""

    def __init__(
        self, server: TmuxServer, session: str, *, bash: str, env: str, settle: float
    ) -> None:
        """``bash`` runs run.sh; ``env`` (env(1)) sets the job's variables where tmux
        cannot; ``settle`` is how long a launch given up on waits for its processes to
        vanish."""
        self.server = server
        self.session = session
        self._bash = bash
        self._env = env
        self._settle = settle

    def open(self, ready: Mapping[int, WindowLaunch]) -> dict[int, str | ExecutorError]:
        """One window per launch (keyed as the caller likes); its id, or why it could not
        be made. A launch that fails runs nothing (see the module docstring)."""
        results: dict[int, str | ExecutorError] = {}
        todo = dict(ready)
        error: ExecutorError | None = None
        make_session = False
        for _ in range(3):
            if not todo:
                break
            made, error = self._run_launches(todo, make_session=make_session)
            for index, window in made.items():
                results[index] = window
                todo.pop(index)
            if error is None or made:
                break
            if not make_session and isinstance(error, TmuxGoneError):
                make_session = True  # no server or no session yet: the first job makes it
            elif make_session and "duplicate session" in error.message:
                make_session = False  # another launch made it just now
            else:
                break
        for index, launch in todo.items():
            why = error or ExecutorError("tmux did not say which window it made")
            results[index] = self._give_up(launch, why)
        return results

    def _run_launches(
        self, todo: Mapping[int, WindowLaunch], *, make_session: bool
    ) -> tuple[dict[int, str], ExecutorError | None]:
        """Open windows for ``todo`` in as few tmux calls as fit (the first makes the
        session when ``make_session``); the windows made, by index, and the error that
        stopped the rest, if any."""
        made: dict[int, str] = {}
        calls: list[tuple[list[int], list[str]]] = []
        for index, launch in todo.items():
            first = make_session and not calls
            args = self._window_args(index, launch, new_session=first)
            if calls and sum(map(len, calls[-1][1])) + sum(map(len, args)) < _MAX_CALL_BYTES:
                calls[-1][0].append(index)
                calls[-1][1].extend([";", *args])
            else:
                calls.append(([index], args))
        for indexes, args in calls:
            try:
                lines, error = self.server.run_partial(*args)
            except ExecutorError as err:  # tmux did not answer: what it did is unknown
                return made, err
            windows, checked = _parse_launch_output(lines)
            for index in indexes:
                window = windows.get(index)
                if window is None:
                    continue
                launch = todo[index]
                expected = (window[0], str(launch.job.id), str(launch.job.attempts), window[1])
                if checked.get(index) != expected:
                    self._repair_options(launch, *window, checked.get(index))
                made[index] = window[0]
            if error is not None:
                return made, error
        return made, None

    def _window_args(self, index: int, launch: WindowLaunch, *, new_session: bool) -> list[str]:
        """tmux commands that open ``launch``'s window after the session's last one and
        set its options there; they print ``made`` and ``set`` lines tagged ``index``."""
        target = f"={self.session}:{{end}}"
        made = f"made\t{index}\t#{{window_id}}\t#{{pane_id}}"
        env = {TOKEN_VAR: launch.token, JOB_ID_VAR: str(launch.job.id)}
        command = [self._bash, str(launch.files.run_script)]
        if new_session:
            # new-session takes -e only from tmux 3.2 on: env(1) sets the same variables.
            # destroy-unattached (a user's global setting) would kill every job the first
            # time someone detaches from the session.
            args = ["new-session", "-d", "-s", self.session, "-x", "200", "-y", "50"]
            args += ["-n", launch.name, "-P", "-F", made, self._env]
            args += [f"{name}={value}" for name, value in env.items()]
            args += [*command, ";", "set-option", "-t", f"={self.session}:"]
            args += ["destroy-unattached", "off"]
        else:
            args = ["new-window", "-d", "-a", "-t", target, "-n", launch.name, "-P", "-F", made]
            for name, value in env.items():
                args += ["-e", f"{name}={value}"]
            args += command
        for option, value in window_options(launch.job).items():
            args += [";", "set-option", "-w", "-t", target, option, value]
        args += [";", "set-option", "-F", "-w", "-t", target, "@loradeck_pane", "#{pane_id}"]
        check = "\t".join(("set", str(index), *_CHECK_FIELDS))
        args += [";", "display-message", "-p", "-t", target, check]
        return args

    def _repair_options(
        self, launch: WindowLaunch, window: str, pane: str, found: tuple[str, ...] | None
    ) -> None:
        """Set the options by window id after a hook of the user's moved ``{end}`` (so
        that they landed on the window ``found`` names, if any): take them off that one."""
        commands: list[str] = []
        if found and found[0] != window and found[0].startswith("@"):
            for option in (*window_options(launch.job), "@loradeck_pane"):
                if option.startswith("@"):
                    commands += ["set-option", "-wu", "-t", found[0], option, ";"]
        options = {**window_options(launch.job), "@loradeck_pane": pane}
        for option, value in options.items():
            commands += ["set-option", "-w", "-t", window, option, value, ";"]
        self.server.try_run(*commands[:-1])

    def _give_up(self, launch: WindowLaunch, why: ExecutorError) -> ExecutorError:
        """Make sure a launch that failed runs nothing, even if tmux opens its window
        later: run.sh needs attempt.json, and whatever already carries the token dies."""
        launch.files.attempt_file.unlink(missing_ok=True)
        kill_tree(None, grace=0.0, token=launch.token, settle=self._settle)
        return ExecutorError(
            f"job {launch.job.id}: cannot start it in a tmux window: {why.message}",
            title=why.title,
        )


@dataclass(frozen=True)
class WindowLaunch:
    """An attempt whose files are written, about to get its window."""

    job: Job
    files: JobFiles
    token: str
    name: str


_CHECK_FIELDS = (
    "#{window_id}",
    "#{@loradeck_job_id}",
    "#{@loradeck_attempt}",
    "#{@loradeck_pane}",
)


def window_options(job: Job) -> dict[str, str]:
    """What a job window carries: it stays after exit, keeps its name, names its job."""
    return {
        "remain-on-exit": "on",
        "allow-rename": "off",
        "@loradeck_job_id": str(job.id),
        "@loradeck_attempt": str(job.attempts),
    }


def _parse_launch_output(
    lines: Sequence[str],
) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str, ...]]]:
    """From a launch call's output: (window, pane) by index, as tmux made them, and
    (window, job id, attempt, pane option) by index, as the options were found after."""
    made: dict[int, tuple[str, str]] = {}
    checked: dict[int, tuple[str, ...]] = {}
    for line in lines:
        kind, _, rest = line.partition("\t")
        index, _, fields = rest.partition("\t")
        if not index.isdigit():
            continue
        parts = tuple(fields.split("\t"))
        if kind == "made" and len(parts) == 2:
            window, pane = parts
            if window.startswith("@") and pane.startswith("%"):
                made[int(index)] = (window, pane)
        elif kind == "set" and len(parts) == len(_CHECK_FIELDS):
            checked[int(index)] = parts
    return made, checked
