"""``--plot FILE``: draw a sweep's time against work on log-log axes (needs matplotlib).

matplotlib is an optional extra (``pip install 'cnncheck[plot]'``); without it
:func:`require_matplotlib` raises a :class:`~cnncheck.errors.CnnCheckError`
that says how to install it, so the command stops before timing anything.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

from cnncheck.errors import CnnCheckError
from cnncheck.results import SweepFit

#: File suffixes ``--plot`` writes.
FORMATS = (".png", ".svg", ".pdf")

_MISSING = "--plot needs matplotlib, which is not installed; install with pip install 'cnncheck[plot]'"


def require_matplotlib():
    """Import and return ``matplotlib.figure``; raise a clear CnnCheckError when it is missing."""
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError:
        raise CnnCheckError(_MISSING) from None


def check_path(path: str | os.PathLike) -> str:
    """Validate the output path's suffix; return it as a string."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise CnnCheckError(f"--plot writes {', '.join(FORMATS)} files, got {path!r}")
    return path


_UNIT_LABEL = {"flop": "work per call (flop)", "byte": "bytes moved per call", "value": "parameter value"}


def plot_sweep(fits: Sequence[SweepFit], path: str | os.PathLike, *, title: str = "") -> str:
    """Draw median seconds per call against work for every fit, one line each, and save.

    Parameters
    ----------
    fits : sequence of SweepFit
    path : str or path-like
        ``.png``, ``.svg`` or ``.pdf``.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.
    """
    path = check_path(path)
    figure_module = require_matplotlib()
    if not fits:
        raise CnnCheckError("--plot: the sweep produced nothing to draw")
    fig = figure_module.Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    units = set()
    for fit in fits:
        points = [(w, m) for w, m in zip(fit.work, fit.medians) if m is not None and m > 0 and w > 0]
        if not points:
            continue
        units.add(fit.work_unit)
        exponent = "" if fit.exponent is None else f" (time ~ work^{fit.exponent:.2f})"
        ax.plot([w for w, _ in points], [m for _, m in points], marker="o",
                label=f"{fit.layer} {fit.direction} {fit.impl}{exponent}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_UNIT_LABEL[units.pop()] if len(units) == 1 else "work per call")
    ax.set_ylabel("median seconds per call")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    try:
        fig.savefig(path)
    except OSError as exc:
        raise CnnCheckError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    return path
