"""The course notebook's numerical-gradient primitives: ``rel_error`` and centred differences.

The course notebook's own helpers, kept with its names and signatures for
notebooks and tests; ``bench`` uses ``rel_error``.  The engine's centred
differences (dtype-aware steps, batched probes through a session, the
noise floor) are in :mod:`cnncheck.numeric`.  Nothing here prints unless
asked to (``verbose=True``).
"""

from __future__ import annotations

import sys

import numpy as np


def rel_error(x, y) -> float:
    """Max elementwise relative error, as the course notebook defines it.

    ``max(|x - y| / max(1e-8, |x| + |y|))``

    Parameters
    ----------
    x, y : array_like of the same shape

    Returns
    -------
    float
        0.0 for empty arrays.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"rel_error needs arrays of one shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient(f, x, verbose=False, h=1e-5):
    """Centred-difference gradient of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable(ndarray) -> float
    x : ndarray, any shape, float; probed in place and restored after every
        probe, even when ``f`` raises
    verbose : bool
        Print each index and its gradient to stdout, as the course notebook does.
    h : float
        Step.

    Returns
    -------
    grad : ndarray, shape of x
    """
    _check_probe_array(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        try:
            x[ix] = old + h
            fxph = f(x)
            x[ix] = old - h
            fxmh = f(x)
        finally:
            x[ix] = old
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            sys.stdout.write(f"{ix} {grad[ix]}\n")
        it.iternext()
    return grad.astype(x.dtype, copy=False)


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Centred-difference gradient of ``sum(f(x) * df)`` with respect to ``x``.

    Parameters
    ----------
    f : callable(ndarray) -> ndarray
    x : ndarray, any shape, float; probed in place and restored after every
        probe, even when ``f`` raises
    df : ndarray, shape of ``f(x)``: the upstream gradient
    h : float
        Step.

    Returns
    -------
    grad : ndarray, shape of x
    """
    _check_probe_array(x)
    df = np.asarray(df)
    grad = np.zeros(x.shape, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        try:
            x[ix] = old + h
            pos = np.array(f(x), dtype=np.float64, copy=True)
            x[ix] = old - h
            neg = np.array(f(x), dtype=np.float64, copy=True)
        finally:
            x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad.astype(x.dtype, copy=False)


def _check_probe_array(x) -> None:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x must be a numpy array that can be probed in place, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must have a floating dtype to take a step of h, got {x.dtype}")
    if not x.flags.writeable:
        raise ValueError("x must be writeable: it is probed in place and restored")
