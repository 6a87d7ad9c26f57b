"""Loop-style layers that allocate every output and gradient with a plain
np.zeros(shape), which is float64 whatever the input dtype: float32 inputs give
float64 results. Values are exact in float64."""

import numpy as np


def affine_forward(x, w, b):
    N = x.shape[0]
    D, M = w.shape
    xf = x.reshape(N, D)
    out = np.zeros((N, M))
    out += xf.dot(w)
    out += b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    N = x.shape[0]
    D, M = w.shape
    dx = np.zeros((N, D))
    dw = np.zeros((D, M))
    db = np.zeros(M)
    dx += dout.dot(w.T)
    dw += x.reshape(N, D).T.dot(dout)
    db += dout.sum(axis=0)
    return dx.reshape(x.shape), dw, db


def relu_forward(x):
    out = np.zeros(x.shape)
    pos = x > 0
    out[pos] = x[pos]
    return out, x


def relu_backward(dout, cache):
    dx = np.zeros(dout.shape)
    pos = cache > 0
    dx[pos] = dout[pos]
    return dx


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    out = np.zeros((N, F, H_out, W_out))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, f, i, j] = np.sum(xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW] * w[f]) + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    dw = np.zeros((F, C, HH, WW))
    db = np.zeros(F)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    r, c = i * stride, j * stride
                    dw[f] += dout[n, f, i, j] * xp[n, :, r:r + HH, c:c + WW]
                    dxp[n, :, r:r + HH, c:c + WW] += dout[n, f, i, j] * w[f]
                    db[f] += dout[n, f, i, j]
    dx = np.zeros((N, C, H, W))
    dx[...] = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, stride = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    H_out = 1 + (H - ph) // stride
    W_out = 1 + (W - pw) // stride
    out = np.zeros((N, C, H_out, W_out))
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
    dx = np.zeros((N, C, H, W))
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    win = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    k = int(np.argmax(win))
                    dx[n, c, i * stride + k // pw, j * stride + k % pw] += dout[n, c, i, j]
    return dx
