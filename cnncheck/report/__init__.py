"""Reporters: one registry for every command and output format.

``render(command, fmt, result)`` returns the text of a result in a format;
``renderable(command, result, width)`` its Rich renderable for a terminal.
Every command's renderers live in this package (``gradcheck``, ``bench``,
``grade``, ``listing``) and are usable from Python.  Reporters only format:
every number comes from the result objects.
"""

from __future__ import annotations

import importlib

#: Formats of each command, the first being the terminal's.
FORMATS = {
    "gradcheck": ("rich", "plain", "markdown", "github", "json", "junit", "gradescope"),
    "bench": ("rich", "plain", "markdown", "json"),
    "grade": ("rich", "plain", "markdown", "json", "csv"),
    "list": ("rich", "plain", "markdown", "json"),
}

_MODULES = {"gradcheck": "cnncheck.report.gradcheck", "bench": "cnncheck.report.bench",
            "grade": "cnncheck.report.grade", "list": "cnncheck.report.listing"}

#: Formats rendered by a module of their own (the result is then that module's object).
_FORMAT_MODULES = {("gradcheck", "gradescope"): "cnncheck.report.gradescope"}


def _module(command: str):
    try:
        return importlib.import_module(_MODULES[command])
    except KeyError:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(_MODULES)}") from None


def render(command: str, fmt: str, result) -> str:
    """``result`` of ``command`` as text in ``fmt`` (every format but ``rich``), ending with a newline."""
    if fmt not in FORMATS.get(command, ()):
        raise ValueError(f"{command} has no format {fmt!r}; known: {', '.join(FORMATS.get(command, ()))}")
    if fmt == "rich":
        raise ValueError("the rich format is a renderable: use renderable()")
    if (command, fmt) in _FORMAT_MODULES:
        return importlib.import_module(_FORMAT_MODULES[(command, fmt)]).render_text(result, fmt)
    return _module(command).render_text(result, fmt)


def renderable(command: str, result, width: int | None = None):
    """A Rich renderable of ``result`` for a console ``width`` columns wide."""
    return _module(command).rich_renderable(result, width)


def default_format(command: str, stream) -> str:
    """``rich`` on a terminal, ``plain`` when piped."""
    return "rich" if getattr(stream, "isatty", lambda: False)() else "plain"
