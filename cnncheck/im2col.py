"""im2col and col2im, as documented in the README: a short name for :mod:`cnncheck.kernels.conv`.

The functions, their validation and the layout live in
:mod:`cnncheck.kernels.conv`; :data:`BACKEND` is :data:`cnncheck.kernels.BACKEND`.
"""

from cnncheck.kernels import BACKEND, BACKENDS
from cnncheck.kernels.conv import col2im, cols_shape, im2col

__all__ = ["BACKEND", "BACKENDS", "col2im", "cols_shape", "im2col"]
