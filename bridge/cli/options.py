"""What the commands that open a Bridge app share: ``-A/--app``, ``--config`` and ``-l``,
loading the app they name (with the command's config), reaching its broker and backend
once at start, and logging to stderr."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar, cast

import click

from bridge.app import Bridge
from bridge.config import use_config_file
from bridge.logformat import FORMATS, configure

F = TypeVar("F", bound=Callable[..., Any])

app_option = click.option("-A", "--app", "app_path", metavar="MODULE[:ATTR]",
                          help="Module holding your Bridge app (attribute `app` by default).")
config_option = click.option("--config", "config_path", type=click.Path(exists=True),
                             help="machinery's config.yml, also for Bridge() in the -A module "
                                  "(default: machinery's environment variables).")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def loglevel_option(default: str = "info") -> Callable[[F], F]:
    """``-l/--loglevel`` (one vocabulary for every command, any case, as Celery's -l) and
    ``--log-format plain|json``, which :func:`setup_logging` reads."""
    level = click.option("-l", "--loglevel", default=default, show_default=True,
                         type=click.Choice(LOG_LEVELS, case_sensitive=False),
                         help="Log level.")
    fmt = click.option("--log-format", type=click.Choice(FORMATS), default="plain",
                       show_default=True, expose_value=False, callback=_remember_format,
                       help="plain lines, or one JSON object a line (for log shippers).")

    def both(command: F) -> F:
        return level(fmt(command))
    return both


def with_logging(default: str = "warning") -> Callable[[F], F]:
    """``-l`` and ``--log-format`` for a command that does not take them itself: logging is
    set up before it runs (put it right under ``@click.command()``)."""
    def wrap(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, loglevel: str, **kwargs: Any) -> Any:
            setup_logging(loglevel)
            return command(*args, **kwargs)
        return loglevel_option(default)(cast(F, run))
    return wrap


def _remember_format(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    ctx.meta["bridge.log_format"] = value
    return value


def load_app(app_path: str | None, config_path: str | None) -> Bridge:
    """The Bridge in ``module[:attribute]`` (default attribute ``app``), or one from config.

    ``--config`` is read first (once) and is what ``Bridge()`` and ``Bridge.from_config()``
    in the module get; an app the module built with another config is given it too. Without
    ``--config``, machinery's environment variables.
    """
    given = use_config_file(config_path)
    if app_path is None:
        return Bridge(given)
    module = _import_app_module(app_path)
    attribute = app_path.rpartition(":")[2] if ":" in app_path else ""
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, Bridge):
        raise click.UsageError(f"-A {app_path}: no Bridge app in it (define `app = Bridge()`, "
                               "or name it: -A module:attribute)")
    if given is not None and app.config is not given:
        app.config = given
    return app


def _import_app_module(app_path: str) -> ModuleType:
    """The module of ``-A``: a dotted name (from the current directory too) or a file path
    (``path/to/tasks.py``), imported with its directory on ``sys.path``."""
    target = app_path.rpartition(":")[0] if ":" in app_path else app_path
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise click.UsageError(f"-A {app_path}: no such file")
        directory, filename = os.path.split(path)
        sys.path.insert(0, directory)
        target = os.path.splitext(filename)[0]
    else:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        if exc.name and target.startswith(exc.name):  # the module itself, not one it imports
            raise click.UsageError(
                f"-A {app_path}: cannot import {target!r} ({exc}); run from the directory "
                "that holds it, or give its file path (-A path/to/tasks.py)") from None
        raise


def setup_logging(level: str, process: str = "") -> None:
    """Log records of ``level`` and above to stderr, as ``--log-format`` asked; ``process``
    names this process on every line (one of ``--processes``)."""
    ctx = click.get_current_context(silent=True)
    configure(level, ctx.meta.get("bridge.log_format", "plain") if ctx else "plain", process)
