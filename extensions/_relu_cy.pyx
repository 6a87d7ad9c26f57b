# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Compiled relu loops, built as ``cnncheck.kernels._relu_cy``.

Called only through :mod:`cnncheck.kernels.relu`, which validates lengths,
dtypes and contiguity before calling in; the loops here trust their
arguments.  :mod:`cnncheck.kernels._relu_numpy` has the same functions with
the same arguments, in numpy, and gives bit-identical results.

Both kernels work on flat C-contiguous arrays of one dtype (float32 or
float64) in blocks of consecutive elements; the blocks are shared among
``num_threads`` OpenMP threads (serially without OpenMP).
"""

from cython cimport floating
from cython.parallel cimport prange

include "_threads.pxi"


# Elements per block of the elementwise relu kernels: the blocks are shared
# among the threads, and each block's loop is simple enough to vectorise.
cdef enum:
    _RELU_BLOCK = 16384
    _RELU_CHUNK = 512  # elements per two-pass chunk of the backward kernel: three arrays in L1


cdef void _relu_forward_block(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    """``out[i] = 0 if x[i] <= 0 else x[i]`` for i < n: a compare and a select, no branch.

    NaN is not <= 0, so it passes through unchanged, as in ``np.maximum(x, 0)``;
    ``-0.0`` gives ``+0.0``.
    """
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        out[i] = 0 if v <= 0 else v


cdef void _relu_backward_block(const floating* dout, const floating* x, floating* dx,
                               Py_ssize_t n) noexcept nogil:
    """``dx[i] = dout[i] + 0 if x[i] > 0 else 0`` for i < n, branch-free.

    Where x <= 0 (or x is NaN) the gradient is exactly +0.0 whatever dout
    holds there, inf and NaN included; ``+ 0`` turns a ``-0.0`` gradient into
    ``+0.0``, so every zero of dx is +0.0, as in the numpy reference.  The
    addition gets a pass of its own over each small chunk (in L1 cache):
    inside the select the compiler would move it into the taken branch, and
    a conditional floating-point operation stops the loop from vectorising.
    """
    cdef Py_ssize_t i, c, start, stop
    cdef floating g
    for c in range((n + _RELU_CHUNK - 1) // _RELU_CHUNK):
        start = c * _RELU_CHUNK
        stop = start + _RELU_CHUNK if start + _RELU_CHUNK < n else n
        for i in range(start, stop):
            dx[i] = dout[i] + 0
        for i in range(start, stop):
            g = dx[i]
            dx[i] = g if x[i] > 0 else 0


def relu_forward(const floating[::1] x, floating[::1] out, int num_threads=1):
    """Fill ``out`` with ``np.maximum(x, 0)``, bit for bit; both flat and of the same length.

    Called by :func:`cnncheck.kernels.relu.relu_forward`.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t blocks = (n + _RELU_BLOCK - 1) // _RELU_BLOCK
    cdef Py_ssize_t k, start
    for k in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
        start = k * _RELU_BLOCK
        _relu_forward_block(&x[start], &out[start], min(_RELU_BLOCK, n - start))


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] dx, int num_threads=1):
    """Overwrite ``dx`` with ``dout`` where ``x > 0`` and +0.0 elsewhere; all flat, one length.

    A ``-0.0`` in dout gives ``+0.0`` too: every zero of dx is +0.0.  Called by
    :func:`cnncheck.kernels.relu.relu_backward`.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t blocks = (n + _RELU_BLOCK - 1) // _RELU_BLOCK
    cdef Py_ssize_t k, start
    for k in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
        start = k * _RELU_BLOCK
        _relu_backward_block(&dout[start], &x[start], &dx[start], min(_RELU_BLOCK, n - start))
