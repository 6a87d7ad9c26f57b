"""The pooling layer builds its window view with np.lib.stride_tricks.as_strided
using strides computed from the shape and item size, as if x were C-contiguous.
For a transposed, Fortran-ordered or sliced x the windows read the wrong
memory, so both passes are wrong for non-contiguous input.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _pool_windows(x, ph, pw, stride):
    """Read-only view of all pooling windows of x, shape (N, C, H_out, W_out, ph, pw)."""
    N, C, H, W = x.shape
    H_out = 1 + (H - ph) // stride
    W_out = 1 + (W - pw) // stride
    item = x.itemsize
    # byte strides of an (N, C, H, W) array
    sW = item
    sH = W * item
    sC = H * W * item
    sN = C * H * W * item
    return as_strided(x, shape=(N, C, H_out, W_out, ph, pw),
                      strides=(sN, sC, stride * sH, stride * sW, sH, sW), writeable=False)


def affine_forward(x, w, b):
    """Fully connected layer. x (N, ...) is flattened to (N, D); w is (D, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    """Gradients of the fully connected layer: returns dx, dw, db."""
    x, w, b = cache
    x2d = x.reshape(x.shape[0], -1)
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2d.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """Elementwise rectifier."""
    out = np.where(x > 0, x, 0)
    return out, x


def relu_backward(dout, cache):
    """Gradient of the rectifier: zero wherever the input was not positive."""
    x = cache
    dx = dout.copy()
    dx[x <= 0] = 0
    return dx


def conv_forward_naive(x, w, b, conv_param):
    """
    Convolution layer, vectorised over the batch and the output positions.

    Only the kernel offsets (kh, kw) are looped over: for each offset the
    strided slice of the padded input lines up with every output position.
    """
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = (H + 2 * p - HH) // s + 1
    Wo = (W + 2 * p - WW) // s + 1

    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    # cols[n, c, kh, kw, i, j] = xp[n, c, i*s + kh, j*s + kw]
    cols = np.empty((N, C, HH, WW, Ho, Wo), dtype=xp.dtype)
    for kh in range(HH):
        for kw in range(WW):
            cols[:, :, kh, kw] = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]

    out = np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3]))  # (N, Ho, Wo, F)
    out = out.transpose(0, 3, 1, 2) + b[None, :, None, None]
    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward_naive(dout, cache):
    """Backward pass of the convolution, looping over kernel offsets only."""
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]

    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for kh in range(HH):
        for kw in range(WW):
            patch = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]  # (N, C, Ho, Wo)
            dw[:, :, kh, kw] = np.einsum('nfij,ncij->fc', dout, patch)
            dxp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s] += np.einsum('nfij,fc->ncij', dout, w[:, :, kh, kw])
    db = dout.sum(axis=(0, 2, 3))
    dx = dxp[:, :, p:p + H, p:p + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """Max pooling over a strided window view of x."""
    ph, pw = pool_param['pool_height'], pool_param['pool_width']
    s = pool_param['stride']
    windows = _pool_windows(x, ph, pw, s)       # (N, C, Ho, Wo, ph, pw)
    out = windows.max(axis=(4, 5))
    cache = (x, pool_param)
    return out, cache


def max_pool_backward_naive(dout, cache):
    """Send each window's gradient to its first maximum."""
    x, pool_param = cache
    ph, pw = pool_param['pool_height'], pool_param['pool_width']
    s = pool_param['stride']
    N, C, Ho, Wo = dout.shape
    windows = _pool_windows(x, ph, pw, s).reshape(N, C, Ho, Wo, ph * pw)
    k = np.argmax(windows, axis=4)
    kh, kw = np.divmod(k, pw)
    n_idx, c_idx, i_idx, j_idx = np.indices((N, C, Ho, Wo))
    dx = np.zeros_like(x)
    np.add.at(dx, (n_idx, c_idx, i_idx * s + kh, j_idx * s + kw), dout)
    return dx
