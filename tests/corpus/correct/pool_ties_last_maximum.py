"""Loop-style layers whose max-pool backward pass sends each window's gradient
to the LAST position (in row-major order) that attains the maximum, found by
taking the argmax of the reversed window. Routing ties to any single maximum
is a valid subgradient; without ties it is the usual argmax routing."""

import numpy as np


def affine_forward(x, w, b):
    rows = x.reshape(x.shape[0], -1)
    return rows @ w + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    rows = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), rows.T @ dout, dout.sum(0)


def relu_forward(x):
    out = x.copy()
    out[x <= 0] = 0
    return out, x


def relu_backward(dout, cache):
    dx = dout.copy()
    dx[cache <= 0] = 0
    return dx


def conv_forward_naive(x, w, b, conv_param):
    S, P = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = (H + 2 * P - KH) // S + 1
    OW = (W + 2 * P - KW) // S + 1
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    out = np.empty((N, F, OH, OW), dtype=xp.dtype)
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * S:i * S + KH, j * S:j * S + KW].reshape(N, -1)
            out[:, :, i, j] = patch @ w.reshape(F, -1).T + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    S, P = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    dxp = np.zeros_like(xp)
    dw2 = np.zeros((F, C * KH * KW), dtype=np.result_type(x, w))
    w2 = w.reshape(F, -1)
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * S:i * S + KH, j * S:j * S + KW].reshape(N, -1)
            g = dout[:, :, i, j]
            dw2 += g.T @ patch
            dxp[:, :, i * S:i * S + KH, j * S:j * S + KW] += (g @ w2).reshape(N, C, KH, KW)
    return dxp[:, :, P:P + H, P:P + W], dw2.reshape(w.shape), dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    ph, pw, S = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    OH, OW = (H - ph) // S + 1, (W - pw) // S + 1
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    out[n, c, i, j] = np.max(x[n, c, i * S:i * S + ph, j * S:j * S + pw])
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, S = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    OH, OW = dout.shape[2:]
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    flat = x[n, c, i * S:i * S + ph, j * S:j * S + pw].ravel()
                    k = flat.size - 1 - int(np.argmax(flat[::-1]))   # last maximum
                    dx[n, c, i * S + k // pw, j * S + k % pw] += dout[n, c, i, j]
    return dx
