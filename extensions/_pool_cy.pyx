# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Compiled max-pooling loops, built as ``cnncheck.kernels._pool_cy``.

Called only through :mod:`cnncheck.kernels.pool`, which validates shapes,
dtypes, contiguity, geometry and the range of every saved offset before
calling in; the loops here trust their arguments and check nothing.
:mod:`cnncheck.kernels._pool_numpy` has the same functions with the same
arguments, in numpy, and gives bit-identical results.

Layouts (C-contiguous)::

    x, dx            (N, C, H, W), float32 or float64
    out, dout        (N, C, H_out, W_out), the dtype of x
    argmax           (N, C, H_out, W_out), uint8, uint16 or uint32

with ``H_out = 1 + (H - ph) // stride`` (likewise W_out) and ``argmax`` the
row-major offset ``kh*pw + kw`` of each window's first maximum.  Both
kernels work plane by plane, one (image, channel) pair at a time: distinct
planes never write to the same memory, and the planes are shared among
``num_threads`` OpenMP threads (serially without OpenMP).  The results do
not depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

include "_threads.pxi"

ctypedef fused index_t:
    uint8_t
    uint16_t
    uint32_t


cdef void _pool_window_nan(const floating* base, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                           floating* out, index_t* arg) noexcept nogil:
    """Max and first argmax of one window by the rule of ``np.argmax``, NaN included.

    A later element wins only when strictly greater, or when it is the first
    NaN (NaN compares false with everything, so nothing displaces it).
    """
    cdef Py_ssize_t kh, kw
    cdef floating best = base[0], v
    cdef index_t k = 0
    for kh in range(ph):
        for kw in range(pw):
            v = base[kh * W + kw]
            if (v > best) or (v != v and best == best):
                best = v
                k = <index_t>(kh * pw + kw)
    out[0] = best
    arg[0] = k


cdef void _pool_plane(const floating* src, floating* out, index_t* arg,
                      Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                      Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Max and first argmax of every window of one plane, in one pass.

    Without NaN in a window (its sum is then a number) the maximum is a
    chain of ``v > m ? v : m`` (a max instruction, no branch) and the argmax
    the first element equal to it, picked by integer selects: random data
    costs no branch mispredictions.  A window whose sum is NaN (a NaN, or
    both infinities) takes the exact rule in :func:`_pool_window_nan`.
    """
    cdef Py_ssize_t i, j, kh, kw, o
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* base
    cdef floating a, b, c, d, m, total, v
    cdef Py_ssize_t k, found
    if ph == 2 and pw == 2 and stride == 2:  # the usual layer, unrolled
        for i in range(H_out):
            r0 = src + 2 * i * W
            r1 = r0 + W
            for j in range(W_out):
                o = i * W_out + j
                a = r0[2 * j]
                b = r0[2 * j + 1]
                c = r1[2 * j]
                d = r1[2 * j + 1]
                total = a + b + c + d
                if total != total:
                    _pool_window_nan(r0 + 2 * j, W, 2, 2, out + o, arg + o)
                    continue
                m = b if b > a else a
                m = c if c > m else m
                m = d if d > m else m
                k = 2 if c == m else 3
                k = 1 if b == m else k
                k = 0 if a == m else k
                out[o] = m
                arg[o] = <index_t>k
        return
    for i in range(H_out):
        for j in range(W_out):
            o = i * W_out + j
            base = src + i * stride * W + j * stride
            m = base[0]
            total = 0
            for kh in range(ph):
                for kw in range(pw):
                    v = base[kh * W + kw]
                    total = total + v
                    m = v if v > m else m
            if total != total:
                _pool_window_nan(base, W, ph, pw, out + o, arg + o)
                continue
            found = ph * pw
            for kh in range(ph - 1, -1, -1):
                for kw in range(pw - 1, -1, -1):
                    k = kh * pw + kw
                    found = k if base[kh * W + kw] == m else found
            out[o] = m
            arg[o] = <index_t>found


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, index_t[:, :, :, ::1] argmax,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, int num_threads=1):
    """Fill ``out`` and ``argmax`` (N, C, H_out, W_out) with each window's max and its offset.

    ``argmax`` holds the row-major offset ``kh*pw + kw`` of the first maximum.
    Called by :func:`cnncheck.kernels.pool.max_pool_forward`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = out.shape[2], W_out = out.shape[3]
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &argmax[n, c, 0, 0],
                    W, ph, pw, stride, H_out, W_out)


cdef void _unpool_plane(const floating* g, const index_t* arg, floating* dst, const Py_ssize_t* offset,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t stride,
                        Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Scatter one plane of dout through its argmax into ``dst`` (H, W), overwriting it.

    The plane is zeroed, then each window's gradient is added to its argmax
    pixel in row-major window order, so each pixel is 0 plus its windows'
    gradients in that order.  ``offset[k]`` is the distance in ``dst`` from
    a window's first pixel to its pixel k (a table: no division per window).
    """
    cdef Py_ssize_t i, j
    for i in range(H * W):
        dst[i] = 0
    for i in range(H_out):
        for j in range(W_out):
            dst[i * stride * W + j * stride + offset[arg[i * W_out + j]]] += g[i * W_out + j]


def max_pool_backward(const floating[:, :, :, ::1] dout, const index_t[:, :, :, ::1] argmax,
                      floating[:, :, :, ::1] dx, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                      int num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with ``dout`` routed to each window's saved argmax.

    Every ``argmax`` entry must be below ph*pw.  Called by
    :func:`cnncheck.kernels.pool.max_pool_backward`.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = dout.shape[2], W_out = dout.shape[3]
    cdef Py_ssize_t nc, n, c, k
    cdef Py_ssize_t* offset = <Py_ssize_t*>malloc(ph * pw * sizeof(Py_ssize_t))
    if offset == NULL:
        raise MemoryError()
    for k in range(ph * pw):
        offset[k] = (k // pw) * W + k % pw
    try:
        for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
            n = nc // C
            c = nc % C
            _unpool_plane(&dout[n, c, 0, 0], &argmax[n, c, 0, 0], &dx[n, c, 0, 0], offset,
                          H, W, stride, H_out, W_out)
    finally:
        free(offset)
