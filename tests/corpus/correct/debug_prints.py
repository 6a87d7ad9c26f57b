"""Loop-style layers that print debugging information (shapes, parameters and
a few statistics) in every function, as students often leave in their
submissions. The prints do not affect the results."""

import numpy as np


def affine_forward(x, w, b):
    print("affine_forward: x", x.shape, "w", w.shape, "b", b.shape)
    N = x.shape[0]
    out = x.reshape(N, -1).dot(w) + b
    print("affine_forward: out", out.shape, "mean %.4f" % out.mean())
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    print("affine_backward: dout", dout.shape)
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = dout.sum(axis=0)
    print("affine_backward: |dx| %.4f |dw| %.4f |db| %.4f" % (np.abs(dx).sum(), np.abs(dw).sum(), np.abs(db).sum()))
    return dx, dw, db


def relu_forward(x):
    out = np.maximum(0, x)
    print("relu_forward:", x.shape, "active units:", int((x > 0).sum()), "of", x.size)
    return out, x


def relu_backward(dout, cache):
    x = cache
    dx = np.where(x > 0, dout, 0.0)
    print("relu_backward:", dx.shape)
    return dx


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    print("conv_forward: x", x.shape, "w", w.shape, "stride", stride, "pad", pad, "-> out", (N, F, H_out, W_out))
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='constant')
    out = np.zeros((N, F, H_out, W_out), dtype=xp.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, f, i, j] = np.sum(xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW] * w[f]) + b[f]
    print("conv_forward: done, out range [%.3f, %.3f]" % (out.min(), out.max()))
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    print("conv_backward: dout", dout.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='constant')
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    r, c = i * stride, j * stride
                    dw[f] += dout[n, f, i, j] * xp[n, :, r:r + HH, c:c + WW]
                    dxp[n, :, r:r + HH, c:c + WW] += dout[n, f, i, j] * w[f]
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    print("conv_backward: dx", dx.shape, "dw", dw.shape, "db", db.shape)
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, stride = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    H_out = 1 + (H - ph) // stride
    W_out = 1 + (W - pw) // stride
    print("pool_forward:", x.shape, pool_param, "->", (N, C, H_out, W_out))
    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, c, i, j] = np.max(x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw])
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, stride = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    print("pool_backward: dout", dout.shape)
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    win = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    r, s = np.unravel_index(np.argmax(win), win.shape)
                    dx[n, c, i * stride + r, j * stride + s] += dout[n, c, i, j]
    print("pool_backward: routed", int(np.count_nonzero(dx)), "gradients")
    return dx
