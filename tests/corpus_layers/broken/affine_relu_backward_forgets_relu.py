"""Affine-relu sandwich whose backward pass skips the relu.

Bug: ``affine_relu_backward`` hands dout straight to the affine backward,
as if every unit were active.
"""

import numpy as np


def affine_relu_forward(x, w, b):
    a = x.reshape(x.shape[0], -1) @ w + b
    return np.maximum(a, 0), (x, w, a)


def affine_relu_backward(dout, cache):
    x, w, a = cache
    da = dout                                   # missing: * (a > 0)
    dx = (da @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ da
    return dx, dw, da.sum(axis=0)
