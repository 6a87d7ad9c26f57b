"""Layer normalisation that normalises each feature over the batch (axis 0), as batchnorm does.

Bug: the statistics are taken over axis 0 instead of axis 1, in the forward
and the backward pass alike, so centred differences agree with the gradients;
only the output is wrong.
"""

import numpy as np


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    mean = x.mean(axis=0, keepdims=True)
    xc = x - mean
    inv_std = 1.0 / np.sqrt((xc ** 2).mean(axis=0, keepdims=True) + eps)
    xhat = xc * inv_std
    return gamma * xhat + beta, (xhat, inv_std, gamma)


def layernorm_backward(dout, cache):
    xhat, inv_std, gamma = cache
    M = dout.shape[0]
    dxhat = dout * gamma
    dx = inv_std / M * (M * dxhat - dxhat.sum(axis=0, keepdims=True)
                        - xhat * (dxhat * xhat).sum(axis=0, keepdims=True))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)
