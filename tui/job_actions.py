"""The keys that act on one job (cancel, priority, hold, retry, attach, evaluate).

Shared by the Jobs screen (the selected row) and the job screen (its job). Every action
runs its facade call in a worker of the app; errors become one notification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen

from loradeck.core.facade import AttachPlan
from loradeck.core.jobview import one_line
from loradeck.core.models import Job, JobState
from loradeck.tui.dialogs import ConfirmDialog

if TYPE_CHECKING:
    from loradeck.tui.app import LoradeckApp

JOB_BINDINGS: list[BindingType] = [
    Binding("a", "attach", "Attach"),
    Binding("c", "cancel_job", "Cancel"),
    Binding("plus,equals_sign", "priority(1)", "Pri+", key_display="+"),
    Binding("minus", "priority(-1)", "Pri-", key_display="-"),
    Binding("h", "hold", "Hold"),
    Binding("r", "retry", "Retry"),
    Binding("e", "evaluate", "Eval"),
]


class JobActions(Screen[None]):
    """A screen that acts on :meth:`selected_job`."""

    BINDINGS: ClassVar[list[BindingType]] = JOB_BINDINGS

    @property
    def host(self) -> LoradeckApp:
        return cast("LoradeckApp", self.app)

    def selected_job(self) -> Job | None:
        """The job the keys act on; None when there is none."""
        raise NotImplementedError

    def _job_or_warn(self) -> Job | None:
        job = self.selected_job()
        if job is None:
            self.notify("no job selected", severity="warning")
        return job

    def _label(self, job: Job) -> str:
        return f"job {job.id} ({one_line(job.name)})"

    def action_cancel_job(self) -> None:
        job = self._job_or_warn()
        if job is None:
            return
        if job.state.is_terminal:
            self.notify(f"{self._label(job)} already ended", severity="warning")
            return
        what = "stop it and end it cancelled" if job.state == JobState.RUNNING else "cancel it"
        dialog = ConfirmDialog(f"Cancel {self._label(job)}?\nThis will {what}.", yes="Cancel job")

        def answered(yes: bool | None) -> None:
            if yes:
                self.host.call_blocking(
                    lambda: self.host.facade.cancel(job.id),
                    lambda done: self._report(done, "cancel requested"),
                    description=f"cancel job {job.id}",
                )

        self.app.push_screen(dialog, answered)

    def action_priority(self, delta: int) -> None:
        job = self._job_or_warn()
        if job is not None:
            self.host.call_blocking(
                lambda: self.host.facade.change_priority(job.id, delta),
                lambda done: self.notify(f"{self._label(done)}: priority {done.priority}"),
                description=f"priority of job {job.id}",
            )

    def action_hold(self) -> None:
        job = self._job_or_warn()
        if job is not None:
            self.host.call_blocking(
                lambda: self.host.facade.toggle_hold(job.id),
                self._report,
                description=f"hold job {job.id}",
            )

    def action_retry(self) -> None:
        job = self._job_or_warn()
        if job is not None:
            self.host.call_blocking(
                lambda: self.host.facade.retry(job.id),
                self._report,
                description=f"retry job {job.id}",
            )

    def action_evaluate(self) -> None:
        job = self._job_or_warn()
        if job is not None:
            self.host.call_blocking(
                lambda: self.host.facade.evaluate(job.id),
                lambda message: self.notify(str(message)),
                description=f"evaluate job {job.id}",
            )

    def action_attach(self) -> None:
        job = self._job_or_warn()
        if job is None:
            return
        environ = dict(self.host.environ)
        self.host.call_blocking(
            lambda: self.host.facade.attach_plan(job, environ),
            self._attach_with,
            description=f"attach to job {job.id}",
        )

    def _attach_with(self, plan: AttachPlan) -> None:
        if plan.suspend:
            code = self.host.terminal.hand_over(self.app, plan.argv, plan.env)
            if code != 0:
                self.notify(f"tmux attach ended with status {code}", severity="warning")
        else:
            self.host.call_blocking(
                lambda: self.host.terminal.run(plan.argv, plan.env),
                lambda code: None,
                description="switch tmux client",
            )

    def _report(self, job: Job, running_note: str | None = None) -> None:
        state = job.state.value.lower()
        if running_note and job.state == JobState.RUNNING:
            state = running_note
        self.notify(f"{self._label(job)}: {state}")
