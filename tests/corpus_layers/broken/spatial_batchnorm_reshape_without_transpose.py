"""Spatial batch normalisation that reshapes x to (N*H*W, C) without moving the channels last.

Bug: ``x.reshape(-1, C)`` on (N, C, H, W) mixes channels and pixels in each
row, so the "channels" normalised are not the channels.  Forward and
backward agree with each other.
"""

import numpy as np


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    rows = x.reshape(-1, C)                      # should be x.transpose(0, 2, 3, 1).reshape(-1, C)
    if mode == "train":
        mean, var = rows.mean(axis=0), rows.var(axis=0)
        bn_param["running_mean"] = momentum * bn_param.get("running_mean", np.zeros(C)) + (1 - momentum) * mean
        bn_param["running_var"] = momentum * bn_param.get("running_var", np.zeros(C)) + (1 - momentum) * var
    else:
        mean, var = bn_param["running_mean"], bn_param["running_var"]
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (rows - mean) * inv_std
    out = gamma * xhat + beta
    return out.reshape(N, C, H, W), (xhat, inv_std, gamma, mode)


def spatial_batchnorm_backward(dout, cache):
    xhat, inv_std, gamma, mode = cache
    N, C, H, W = dout.shape
    d = dout.reshape(-1, C)
    dgamma, dbeta = (d * xhat).sum(axis=0), d.sum(axis=0)
    dxhat = d * gamma
    if mode == "test":
        dx = dxhat * inv_std
    else:
        M = d.shape[0]
        dx = inv_std / M * (M * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx.reshape(N, C, H, W), dgamma, dbeta
