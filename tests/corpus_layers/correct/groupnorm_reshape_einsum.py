"""Spatial group normalisation with a five-dimensional view and einsum, and right.

x is viewed as (N, G, C // G, H, W); statistics over the last three axes;
the backward pass uses einsum for the sums and a namedtuple cache.
"""

from collections import namedtuple

import numpy as np

Cache = namedtuple("Cache", "xhat inv gamma G")


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    inv = 1.0 / np.sqrt(((xg - mean) ** 2).mean(axis=(2, 3, 4), keepdims=True) + gn_param.get("eps", 1e-5))
    xhat = ((xg - mean) * inv).reshape(N, C, H, W)
    return xhat * gamma + beta, Cache(xhat, inv, gamma, G)


def spatial_groupnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    G = cache.G
    dgamma = np.einsum("nchw,nchw->c", dout, cache.xhat).reshape(1, C, 1, 1)
    dbeta = np.einsum("nchw->c", dout).reshape(1, C, 1, 1)
    g = (dout * cache.gamma).reshape(N, G, -1)
    xh = cache.xhat.reshape(N, G, -1)
    M = g.shape[2]
    s1 = np.einsum("ngm->ng", g)[:, :, None]
    s2 = np.einsum("ngm,ngm->ng", g, xh)[:, :, None]
    dx = cache.inv.reshape(N, G, 1) / M * (M * g - s1 - xh * s2)
    return dx.reshape(N, C, H, W), dgamma, dbeta
