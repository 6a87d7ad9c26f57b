"""Relu kernels: one pass over memory in each direction, a compare and a select per element.

This module validates its arguments and calls one of two kernel modules with
the same functions and argument order: the compiled ``_relu_cy`` (Cython) or
the numpy fallback :mod:`cnncheck.kernels._relu_numpy`, as
:mod:`cnncheck.kernels` chose.  Both give the same bits as
``np.maximum(x, 0)`` forward, and backward ``dout`` where ``x > 0`` and
``+0.0`` elsewhere (even where dout is inf or NaN).  Bad arguments raise
:class:`cnncheck.errors.CnnCheckError` (a ``ValueError``) here.
"""

from __future__ import annotations

import numpy as np

from cnncheck import kernels
from cnncheck.errors import CnnCheckError

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Least bytes read and written per thread.  Measured here on the notebook's
# relu (640 000 elements): float64, two threads 0.11 to 0.17 ms forward and
# 0.25 to 0.43 ms backward, one thread 0.25 to 0.31 and 0.59 to 1.05 ms;
# float32 forward, one thread 0.08 ms and two 0.12 to 0.14 ms (a pass that
# short does not pay for waking a second thread).
BYTES_PER_THREAD = 3 << 20
# Least bytes shared among threads on a busy machine (below it, one thread).
# Measured with two busy-loop processes: the notebook's relu forward and
# backward 1.9 to 2.5 ms on one thread, 5.6 to 6.1 ms shared in pieces.
SHARE_FROM = 1 << 26


def _check(a, name: str, dtype=None) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype not in _FLOAT_DTYPES:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise CnnCheckError(f"{name} must be a float32 or float64 array, got {got}")
    if dtype is not None and a.dtype != dtype:
        raise CnnCheckError(f"{name} must have dtype {dtype}, got {a.dtype}")
    return np.ascontiguousarray(a)


def relu_forward(x, backend=None) -> np.ndarray:
    """``np.maximum(x, 0)`` in one pass: NaN passes through, ``-0.0`` and negatives give ``+0.0``.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64; any memory layout, never modified
    backend : {None, "cython", "numpy"}
        None uses :data:`cnncheck.kernels.BACKEND`; a name forces that kernel.

    Returns
    -------
    out : ndarray, shape and dtype of x
    """
    kernel = kernels.module("relu", backend)
    xc = _check(x, "x")
    out = np.empty(xc.shape, dtype=xc.dtype)
    flat_x, flat_out = xc.reshape(-1), out.reshape(-1)

    def call(lo, hi, threads):
        kernel.relu_forward(flat_x[lo:hi], flat_out[lo:hi], threads)

    kernels.split(call, xc.size, 2 * xc.nbytes, BYTES_PER_THREAD, SHARE_FROM)
    return out


def relu_backward(dout, x, backend=None) -> np.ndarray:
    """``dout`` where ``x > 0``, exactly ``+0.0`` elsewhere, in one pass.

    Parameters
    ----------
    dout : ndarray, float32 or float64; any memory layout, never modified
    x : ndarray, shape and dtype of dout
    backend : {None, "cython", "numpy"}
        As in :func:`relu_forward`.

    Returns
    -------
    dx : ndarray, shape and dtype of dout
    """
    kernel = kernels.module("relu", backend)
    d = _check(dout, "dout")
    xc = _check(x, "x", d.dtype)
    if xc.shape != d.shape:
        raise CnnCheckError(f"x must have the shape of dout {d.shape}, got {xc.shape}")
    dx = np.empty(d.shape, dtype=d.dtype)
    flat_d, flat_x, flat_dx = d.reshape(-1), xc.reshape(-1), dx.reshape(-1)

    def call(lo, hi, threads):
        kernel.relu_backward(flat_d[lo:hi], flat_x[lo:hi], flat_dx[lo:hi], threads)

    kernels.split(call, d.size, 3 * d.nbytes, BYTES_PER_THREAD, SHARE_FROM)
    return dx
