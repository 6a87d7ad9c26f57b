"""Pure-numpy relu kernels: the fallback for the compiled ``cnncheck.kernels._relu_cy``.

Same functions, same argument order and bit-identical results as the
compiled kernels (see :mod:`cnncheck.kernels.relu`); used when the extension
is not built or when ``CNNCHECK_PURE_PYTHON=1``.  Like the compiled kernels,
these functions trust their arguments: their callers validate them first.
``num_threads`` is accepted for the common signature and ignored.
"""

from __future__ import annotations

import numpy as np


def relu_forward(x, out, num_threads=1):
    """Fill ``out`` with ``np.maximum(x, 0)``; both flat and of the same length.

    NaN passes through; ``-0.0`` and every negative give ``+0.0``.
    """
    np.maximum(x, 0, out=out)


def relu_backward(dout, x, dx, num_threads=1):
    """Overwrite ``dx`` with ``dout`` where ``x > 0`` and +0.0 elsewhere; all flat, one length.

    ``dout * (x > 0) + 0.0`` is that, bit for bit (``+ 0.0`` turns the
    ``-0.0`` of a negative or zero gradient into ``+0.0``), unless dout holds
    inf or NaN where x <= 0: ``0 * inf`` is NaN there, which the sum reveals,
    and those places are then set to 0.
    """
    passes = x > 0
    with np.errstate(invalid="ignore"):  # inf * 0 here, inf + -inf in the sum: both only flag a NaN
        np.multiply(dout, passes, out=dx)
        np.add(dx, 0.0, out=dx)
        if np.isnan(np.add.reduce(dx)):
            np.copyto(dx, 0, where=~passes)
