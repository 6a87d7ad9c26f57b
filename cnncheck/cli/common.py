"""Helpers the subcommands share: turning library errors into Click usage errors."""

from __future__ import annotations

import contextlib
import functools

import click

from cnncheck.errors import CnnCheckError


@contextlib.contextmanager
def usage_errors(param_hint: str | None = None):
    """Turn a :class:`CnnCheckError` raised inside the block into a Click usage error (exit 2).

    With ``param_hint`` the message names the option, as ``BadParameter`` does.
    """
    try:
        yield
    except CnnCheckError as exc:
        if param_hint:
            raise click.BadParameter(str(exc), param_hint=param_hint) from None
        raise click.UsageError(str(exc)) from None


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int | None = None, width: int = 24):
    """A transient Rich progress bar on stderr.

    Yields ``update(**fields)``, Rich's ``Progress.update`` bound to the one
    task (``advance=``, ``completed=``, ``total=``, ``description=``), or None
    when ``enabled`` is false.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield functools.partial(bar.update, bar.add_task(description, total=total))
