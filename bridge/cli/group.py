"""The ``mbridge`` click group: every command, and errors we raise on purpose as one line."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

import click

from bridge import __version__
from bridge.celery_import import CeleryImportError
from bridge.cli.beat import beat
from bridge.cli.decode import decode
from bridge.cli.demo import demo
from bridge.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE
from bridge.cli.migrate import migrate
from bridge.cli.queues import control, inspect, requeue_dead
from bridge.cli.relay import relay
from bridge.cli.tasks import result, send
from bridge.cli.ui import ui
from bridge.cli.worker import worker
from bridge.config import ConfigError, ConfigWarning
from bridge.errors import BridgeError
from bridge.outage import is_outage, one_line, refused_login
from bridge.schema import SchemaError
from bridge.task import TaskDefinitionError

__all__ = ["main"]


class _ConfigProblem(click.ClickException):
    """A usage or configuration error: one line, exit status 2 (as click's usage errors)."""

    exit_code = EXIT_USAGE


class _Interrupted(click.ClickException):
    """Ctrl-C before the command had its own handling of it: one line, exit status 130."""

    exit_code = EXIT_INTERRUPTED


class _Group(click.Group):
    """Errors become one clear line, not a traceback (unless ``--traceback``): a bad
    configuration or URL exits 2, anything that went wrong while running exits 1, Ctrl-C
    (during start-up, say) 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            if ctx.params.get("traceback"):
                raise
            raise _Interrupted("interrupted (Ctrl-C)") from None
        except Exception as exc:
            if ctx.params.get("traceback") or logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise _one_line(exc) from None


def _one_line(exc: Exception) -> click.ClickException:
    if isinstance(exc, ConfigError | SchemaError | TaskDefinitionError | CeleryImportError):
        return _ConfigProblem(str(exc))
    if refused_login(exc):
        return _ConfigProblem(f"a broker or result backend refused the login "
                              f"({one_line(exc)}): fix the user and password in its URL")
    if isinstance(exc, BridgeError):
        return click.ClickException(str(exc))
    if is_outage(exc):
        return click.ClickException(f"a broker or result backend cannot be reached "
                                    f"({one_line(exc)}): start it, or fix its URL")
    return click.ClickException(f"{type(exc).__name__}: {one_line(exc)} "
                                "(run mbridge --traceback ... to see where)")


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mbridge")
@click.option("--traceback", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(traceback: bool) -> None:
    """machinery-bridge: Python workers, producers and codecs for Go machinery and Celery."""
    warnings.showwarning = _show_warning


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    """Configuration warnings as one line on stderr (others as Python shows them)."""
    if issubclass(category, ConfigWarning):
        (file or sys.stderr).write(f"Warning: {message}\n")
        return
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


for _command in (decode, worker, send, result, inspect, requeue_dead, control, ui, demo,
                 migrate, relay, beat):
    main.add_command(_command)
