"""Spatial group normalisation that puts channel c in group c % G instead of c // (C // G).

Bug: ``x.reshape(N, C // G, G, H, W)`` and statistics over axes (1, 3, 4):
groups of every G-th channel rather than of consecutive channels.  Forward
and backward agree with each other.
"""

import numpy as np


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H, W)
    mean = xg.mean(axis=(1, 3, 4), keepdims=True)
    var = xg.var(axis=(1, 3, 4), keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = ((xg - mean) * inv_std).reshape(N, C, H, W)
    return gamma * xhat + beta, (xhat, inv_std, gamma, G)


def spatial_groupnorm_backward(dout, cache):
    xhat, inv_std, gamma, G = cache
    N, C, H, W = dout.shape
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(N, C // G, G, H, W)
    xh = xhat.reshape(N, C // G, G, H, W)
    M = C // G * H * W
    dx = inv_std / M * (M * dxhat - dxhat.sum(axis=(1, 3, 4), keepdims=True)
                        - xh * (dxhat * xh).sum(axis=(1, 3, 4), keepdims=True))
    return dx.reshape(N, C, H, W), dgamma, dbeta
