"""The five sandwich layers built from their own parts, with dict caches, and right.

Convolution uses ``sliding_window_view`` and einsum, its backward pass one
slice-add per kernel offset; max pooling loops over output positions and
routes each window's gradient to its first maximum; batch and layer
normalisation use the closed backward formula.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


# -- parts ------------------------------------------------------------------------
def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b, {"x": x, "w": w}


def affine_backward(dout, cache):
    x, w = cache["x"], cache["w"]
    return (dout @ w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T @ dout, dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(x, 0), {"positive": x > 0}


def relu_backward(dout, cache):
    return dout * cache["positive"]


def conv_forward(x, w, b, conv_param):
    s, pad = conv_param["stride"], conv_param["pad"]
    F, C, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::s, ::s]
    out = np.einsum("nchwij,fcij->nfhw", windows, w) + b[None, :, None, None]
    return out, {"x": x, "w": w, "s": s, "pad": pad, "windows": windows}


def conv_backward(dout, cache):
    x, w, s, pad = cache["x"], cache["w"], cache["s"], cache["pad"]
    F, C, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    dw = np.einsum("nchwij,nfhw->fcij", cache["windows"], dout)
    dxp = np.zeros((x.shape[0], C, x.shape[2] + 2 * pad, x.shape[3] + 2 * pad), dtype=np.result_type(x, dout))
    for i in range(HH):
        for j in range(WW):
            dxp[:, :, i:i + s * H_out:s, j:j + s * W_out:s] += np.einsum("nfhw,fc->nchw", dout, w[:, :, i, j])
    dx = dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def pool_forward(x, pool_param):
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    H_out, W_out = 1 + (H - ph) // s, 1 + (W - pw) // s
    out = np.empty((N, C, H_out, W_out), dtype=x.dtype)
    where = np.empty((N, C, H_out, W_out), dtype=np.int64)
    for i in range(H_out):
        for j in range(W_out):
            window = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, -1)
            where[:, :, i, j] = window.argmax(axis=2)
            out[:, :, i, j] = window.max(axis=2)
    return out, {"shape": x.shape, "where": where, "param": (ph, pw, s)}


def pool_backward(dout, cache):
    ph, pw, s = cache["param"]
    dx = np.zeros(cache["shape"], dtype=dout.dtype)
    N, C, H_out, W_out = dout.shape
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for i in range(H_out):
        for j in range(W_out):
            r, q = np.divmod(cache["where"][:, :, i, j], pw)
            np.add.at(dx, (n, c, i * s + r, j * s + q), dout[:, :, i, j])
    return dx


def _normalise(a, axis, eps):
    mean = a.mean(axis=axis, keepdims=True)
    inv = 1.0 / np.sqrt(((a - mean) ** 2).mean(axis=axis, keepdims=True) + eps)
    return (a - mean) * inv, inv


def _normalise_backward(g, xhat, inv, axis):
    M = g.shape[axis]
    return inv / M * (M * g - g.sum(axis=axis, keepdims=True) - xhat * (g * xhat).sum(axis=axis, keepdims=True))


def batchnorm_forward(a, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    if bn_param["mode"] == "train":
        xhat, inv = _normalise(a, 0, eps)
        bn_param["running_mean"] = momentum * bn_param.get("running_mean", 0.0) + (1 - momentum) * a.mean(axis=0)
        bn_param["running_var"] = momentum * bn_param.get("running_var", 0.0) + (1 - momentum) * a.var(axis=0)
    else:
        inv = 1.0 / np.sqrt(bn_param["running_var"] + eps)
        xhat = (a - bn_param["running_mean"]) * inv
    return gamma * xhat + beta, {"xhat": xhat, "inv": inv, "gamma": gamma, "train": bn_param["mode"] == "train"}


def batchnorm_backward(dout, cache):
    g = dout * cache["gamma"]
    dx = _normalise_backward(g, cache["xhat"], cache["inv"], 0) if cache["train"] else g * cache["inv"]
    return dx, (dout * cache["xhat"]).sum(axis=0), dout.sum(axis=0)


def layernorm_forward(a, gamma, beta, ln_param):
    xhat, inv = _normalise(a, 1, ln_param.get("eps", 1e-5))
    return gamma * xhat + beta, {"xhat": xhat, "inv": inv, "gamma": gamma}


def layernorm_backward(dout, cache):
    dx = _normalise_backward(dout * cache["gamma"], cache["xhat"], cache["inv"], 1)
    return dx, (dout * cache["xhat"]).sum(axis=0), dout.sum(axis=0)


# -- sandwiches ------------------------------------------------------------------------
def affine_relu_forward(x, w, b):
    a, fc = affine_forward(x, w, b)
    out, relu = relu_forward(a)
    return out, {"fc": fc, "relu": relu}


def affine_relu_backward(dout, cache):
    return affine_backward(relu_backward(dout, cache["relu"]), cache["fc"])


def conv_relu_forward(x, w, b, conv_param):
    a, conv = conv_forward(x, w, b, conv_param)
    out, relu = relu_forward(a)
    return out, {"conv": conv, "relu": relu}


def conv_relu_backward(dout, cache):
    return conv_backward(relu_backward(dout, cache["relu"]), cache["conv"])


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    a, conv = conv_forward(x, w, b, conv_param)
    r, relu = relu_forward(a)
    out, pool = pool_forward(r, pool_param)
    return out, {"conv": conv, "relu": relu, "pool": pool}


def conv_relu_pool_backward(dout, cache):
    dr = pool_backward(dout, cache["pool"])
    return conv_backward(relu_backward(dr, cache["relu"]), cache["conv"])


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    a, fc = affine_forward(x, w, b)
    an, bn = batchnorm_forward(a, gamma, beta, bn_param)
    out, relu = relu_forward(an)
    return out, {"fc": fc, "bn": bn, "relu": relu}


def affine_bn_relu_backward(dout, cache):
    da, dgamma, dbeta = batchnorm_backward(relu_backward(dout, cache["relu"]), cache["bn"])
    return (*affine_backward(da, cache["fc"]), dgamma, dbeta)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    a, fc = affine_forward(x, w, b)
    an, ln = layernorm_forward(a, gamma, beta, ln_param)
    out, relu = relu_forward(an)
    return out, {"fc": fc, "ln": ln, "relu": relu}


def affine_ln_relu_backward(dout, cache):
    da, dgamma, dbeta = layernorm_backward(relu_backward(dout, cache["relu"]), cache["ln"])
    return (*affine_backward(da, cache["fc"]), dgamma, dbeta)
