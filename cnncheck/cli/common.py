"""Helpers the subcommands share: turning library errors into Click usage errors."""

from __future__ import annotations

import contextlib

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
