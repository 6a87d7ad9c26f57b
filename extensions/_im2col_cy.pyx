# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
"""Compiled im2col / col2im loops, built as ``cnncheck._im2col_cy``.

Called only through :mod:`cnncheck.im2col`, which validates shapes, dtypes,
contiguity and geometry before calling in; the loops here trust their
arguments and check nothing.  :mod:`cnncheck._im2col_numpy` has the same
functions with the same arguments, in numpy.

Memory layout (both arrays C-contiguous, one dtype, float32 or float64)::

    x    (N, C, H, W)
    cols (C*HH*WW, N*H_out*W_out)
    cols[(c*HH + kh)*WW + kw, (n*H_out + i)*W_out + j] = x_pad[n, c, i*stride + kh, j*stride + kw]

where ``x_pad`` is ``x`` with ``pad`` zeros on every side and
``H_out = 1 + (H + 2*pad - HH) // stride`` (likewise W_out).  Rows line up
with ``w.reshape(F, C*HH*WW)``, so one matrix product ``w2 @ cols`` is the
whole convolution, and the block of columns of image n is a (strided) matrix
of its own.  Loops run image by image (x[n] stays in cache) and the innermost
loop runs over j, along contiguous memory of ``cols``.
"""

from cython cimport floating


cdef inline Py_ssize_t _first_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t n_out) noexcept nogil:
    """Smallest j in [0, n_out] with j*stride + offset >= 0."""
    cdef Py_ssize_t j
    if offset >= 0:
        return 0
    j = (stride - 1 - offset) // stride
    return j if j < n_out else n_out


cdef inline Py_ssize_t _end_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                  Py_ssize_t n_out) noexcept nogil:
    """One past the largest j in [0, n_out) with j*stride + offset < size (0 if none)."""
    cdef Py_ssize_t j
    if offset >= size:
        return 0
    j = (size - 1 - offset) // stride + 1
    return j if j < n_out else n_out


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Fill ``cols`` (C*HH*WW, N*H_out*W_out) with the windows of ``x`` (N, C, H, W).

    Every element of ``cols`` is written (zeros where a window reaches the
    padding), so ``cols`` may be uninitialised.  Called by
    :func:`cnncheck.im2col.im2col`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t n, c, kh, kw, row, i, j, h, w0, j_lo, j_hi, col
    with nogil:
        for n in range(N):
            for c in range(C):
                for kh in range(HH):
                    for kw in range(WW):
                        row = (c * HH + kh) * WW + kw
                        w0 = kw - pad
                        j_lo = _first_valid(w0, stride, W_out)
                        j_hi = _end_valid(w0, stride, W, W_out)
                        if j_hi < j_lo:
                            j_hi = j_lo
                        for i in range(H_out):
                            h = i * stride + kh - pad
                            col = (n * H_out + i) * W_out
                            if h < 0 or h >= H:
                                for j in range(W_out):
                                    cols[row, col + j] = 0
                                continue
                            for j in range(j_lo):
                                cols[row, col + j] = 0
                            for j in range(j_lo, j_hi):
                                cols[row, col + j] = x[n, c, h, j * stride + w0]
                            for j in range(j_hi, W_out):
                                cols[row, col + j] = 0


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad):
    """Sum the columns ``cols`` (C*HH*WW, N*H_out*W_out) back into ``dx`` (N, C, H, W).

    ``dx`` is overwritten: zeroed first, then every column entry that lies
    inside the unpadded image is added to its pixel, kernel offset by kernel
    offset in row-major order (entries in the padding are dropped; pixels no
    window reaches stay zero).  The adjoint of :func:`im2col`.  Called by
    :func:`cnncheck.im2col.col2im`.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t n, c, kh, kw, row, i, j, h, w0, j_lo, j_hi, col
    with nogil:
        for n in range(N):
            for c in range(C):
                for h in range(H):
                    for j in range(W):
                        dx[n, c, h, j] = 0
                for kh in range(HH):
                    for kw in range(WW):
                        row = (c * HH + kh) * WW + kw
                        w0 = kw - pad
                        j_lo = _first_valid(w0, stride, W_out)
                        j_hi = _end_valid(w0, stride, W, W_out)
                        for i in range(H_out):
                            h = i * stride + kh - pad
                            if h < 0 or h >= H:
                                continue
                            col = (n * H_out + i) * W_out
                            for j in range(j_lo, j_hi):
                                dx[n, c, h, j * stride + w0] += cols[row, col + j]
