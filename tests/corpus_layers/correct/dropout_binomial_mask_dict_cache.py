"""Inverted dropout drawing its mask from its own RandomState with a binomial draw, and right.

The mask (already scaled by 1/p) comes from ``RandomState(seed).binomial``,
not from ``np.random.rand``, so its values differ from the course's for the
same seed; the cache is a dict; test mode returns a copy of x.
"""

import numpy as np


def dropout_forward(x, dropout_param):
    p = dropout_param["p"]
    cache = {"mode": dropout_param["mode"]}
    if dropout_param["mode"] == "test":
        return x.copy(), cache
    state = np.random.RandomState(dropout_param.get("seed"))
    cache["mask"] = state.binomial(1, p, size=x.shape).astype(x.dtype) / x.dtype.type(p)
    return x * cache["mask"], cache


def dropout_backward(dout, cache):
    if cache["mode"] == "test":
        return dout
    return dout * cache["mask"]
