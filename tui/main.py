"""The ``loradeck`` console entry: the TUI when no command is given, else the CLI.

``loradeck`` (with global options only, e.g. ``--home``, ``--gpus sim:4``) opens the TUI
on a terminal; ``loradeck demo`` opens it on the demo batch unless ``--headless`` (or
no terminal). Everything else is :func:`loradeck.core.cli.main`.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from loradeck.core import cli
from loradeck.core.errors import LoradeckError
from loradeck.core.home import Home
from loradeck.core.settings import Settings


def wants_tui(argv: Sequence[str], *, interactive: bool) -> bool:
    """Whether this command line opens the TUI (only on a terminal)."""
    if not interactive or any(a in ("-h", "--help", "--version") for a in argv):
        return False
    quiet = io.StringIO()
    try:
        # a bad command line is the CLI's to report: parse silently here
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            args, rest = cli.build_parser().parse_known_args(list(argv))
    except SystemExit:
        return False
    if rest or args.run_batch:
        return False
    command = getattr(args, "command_name", None)
    if command is None:
        return True
    return command == "demo" and not getattr(args, "headless", False)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``loradeck``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not wants_tui(args_list, interactive=interactive):
        return cli.main(args_list)
    args = cli.build_parser().parse_args(args_list)
    try:
        ctx = cli.Context(args)
        demo = args.command_name == "demo"
        return run_tui(
            ctx.home,
            cli.demo_settings(ctx.settings) if demo else ctx.settings,
            gpus=args.gpus_spec or ("sim:4" if demo else None),
            tmux_session=args.tmux_session or ("loradeck-demo" if demo else None),
            tmux_socket=args.tmux_socket,
            demo_batch=cli.demo_batch_path() if demo else None,
            config_path=Path(args.config).absolute() if args.config else None,
        )
    except LoradeckError as err:
        print(f"loradeck: {err.title}: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED


def run_tui(
    home: Home,
    settings: Settings,
    *,
    gpus: str | None,
    tmux_session: str | None,
    tmux_socket: str | None,
    demo_batch: Path | None = None,
    config_path: Path | None = None,
) -> int:
    """Open the TUI on ``home``; returns the exit code. Raises LoradeckError for bad
    settings (unknown ``--gpus``, tmux missing) before the screen opens. The theme is
    ``LORADECK_THEME``, else ``[tui] theme``, else the default."""
    from loradeck.core.facade import LiveFacade
    from loradeck.tui.app import LoradeckApp
    from loradeck.tui.themes import starting_theme

    facade = LiveFacade(
        home,
        settings,
        gpus=gpus,
        tmux_session=tmux_session,
        tmux_socket=tmux_socket,
        config_path=config_path,
    )
    theme, theme_source = starting_theme(settings.tui.theme, os.environ)
    app = LoradeckApp(
        facade,
        theme=theme,
        theme_source=theme_source,
        machine_interval=settings.monitoring.gpu_sample_interval,
        demo_batch=demo_batch,
        freeze_gc=True,
    )
    try:
        result = app.run()
    finally:
        if not app.closed:
            note = facade.close(keep_scheduling=False)
            app.exit_note = app.exit_note or note
    if app.exit_note:
        print(f"loradeck: {app.exit_note}", file=sys.stderr)
    return result if isinstance(result, int) else app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
