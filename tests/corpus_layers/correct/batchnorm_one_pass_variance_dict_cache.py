"""Batch normalisation written differently from the course's solution, and right.

The variance is the one-pass ``E[x^2] - E[x]^2``; the cache is a dict; the
running statistics are updated in place with ``*=`` and ``+=`` when bn_param
holds arrays; ``batchnorm_backward`` is the closed formula and
``batchnorm_backward_alt`` walks the computational graph node by node.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    if "running_mean" not in bn_param:
        bn_param["running_mean"] = np.zeros(D, dtype=x.dtype)
        bn_param["running_var"] = np.zeros(D, dtype=x.dtype)
    if mode == "train":
        mean = x.mean(axis=0)
        var = (x * x).mean(axis=0) - mean * mean
        for key, stat in (("running_mean", mean), ("running_var", var)):
            bn_param[key] *= momentum
            bn_param[key] += (1 - momentum) * stat
    elif mode == "test":
        mean, var = bn_param["running_mean"], bn_param["running_var"]
    else:
        raise ValueError(f"invalid mode {mode!r}")
    std = np.sqrt(var + eps)
    xhat = (x - mean) / std
    cache = {"xhat": xhat, "std": std, "gamma": gamma, "train": mode == "train", "xc": x - mean, "var": var,
             "eps": eps}
    return xhat * gamma + beta, cache


def batchnorm_backward(dout, cache):
    xhat, std, gamma = cache["xhat"], cache["std"], cache["gamma"]
    dgamma = np.einsum("nd,nd->d", dout, xhat)
    dbeta = dout.sum(axis=0)
    g = dout * gamma
    if not cache["train"]:
        return g / std, dgamma, dbeta
    dx = (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) / std
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    xc, var, eps, gamma = cache["xc"], cache["var"], cache["eps"], cache["gamma"]
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * cache["xhat"]).sum(axis=0)
    dxhat = dout * gamma
    if not cache["train"]:
        return dxhat / cache["std"], dgamma, dbeta
    ivar = 1.0 / np.sqrt(var + eps)
    dxc1 = dxhat * ivar
    divar = (dxhat * xc).sum(axis=0)
    dsqrtvar = -divar / (var + eps)
    dvar = 0.5 * dsqrtvar / np.sqrt(var + eps)
    dsq = np.ones_like(dout) * dvar / N
    dxc2 = 2 * xc * dsq
    dx1 = dxc1 + dxc2
    dmu = -dx1.sum(axis=0)
    dx2 = np.ones_like(dout) * dmu / N
    return dx1 + dx2, dgamma, dbeta
