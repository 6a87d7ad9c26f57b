"""Batch normalisation whose dgamma sums over the features (axis 1) instead of the batch (axis 0).

Bug: ``dgamma = (dout * xhat).sum(axis=1)`` in both backward passes: shape (N,) instead of (D,), and
the right shape with the wrong values whenever N == D.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        mean = x.mean(axis=0)
        var = x.var(axis=0)
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        mean, var = running_mean, running_var
    xc = x - mean
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv_std
    out = gamma * xhat + beta
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, (xc, xhat, inv_std, gamma, mode)


def batchnorm_backward(dout, cache):
    xc, xhat, inv_std, gamma, mode = cache
    N = dout.shape[0]
    dgamma = (dout * xhat).sum(axis=1)
    dbeta = dout.sum(axis=0)
    dxhat = dout * gamma
    if mode == "test":
        return dxhat * inv_std, dgamma, dbeta
    dvar = (dxhat * xc).sum(axis=0) * -0.5 * inv_std ** 3
    dxc = dxhat * inv_std + 2.0 / N * xc * dvar
    dx = dxc - dxc.sum(axis=0) / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    xc, xhat, inv_std, gamma, mode = cache
    N = dout.shape[0]
    dgamma = (dout * xhat).sum(axis=1)
    dbeta = dout.sum(axis=0)
    dxhat = dout * gamma
    if mode == "test":
        return dxhat * inv_std, dgamma, dbeta
    dx = inv_std / N * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, dgamma, dbeta
