"""Inverted dropout with the course notebook's names and ``dropout_param`` dict.

Loop-free numpy reference, following the contract of :mod:`cnncheck.layers.naive`::

    out, cache = dropout_forward(x, dropout_param)
    dx = dropout_backward(dout, cache)

``p`` is the probability of *keeping* a unit.  At train time each unit is
kept with probability p and the kept ones are scaled by 1/p, so the
expectation of ``out`` is x; at test time the layer is the identity.

The mask is drawn from numpy's global generator as the course draws it,
``np.random.rand(*x.shape) < p``; when ``dropout_param`` has a ``'seed'``,
``np.random.seed(seed)`` is called first, so the same seed gives the same
mask (this is what lets centred differences see one mask throughout).
x, dout and ``dropout_param`` are never modified.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.layers.naive import as_float_array, check_dout, common_dtype
from cnncheck.layers.norm import param_mode

_CACHE = ("x", "p", "mode", "mask")


def dropout_settings(dropout_param) -> tuple:
    """Validate a course ``dropout_param`` dict.

    Returns
    -------
    (p, mode, seed)
        p a float in (0, 1], mode 'train' or 'test', seed an int or None.
    """
    if not isinstance(dropout_param, dict):
        raise CnnCheckError(f"dropout_param must be a dict, got {type(dropout_param).__name__}")
    if "p" not in dropout_param:
        raise CnnCheckError("dropout_param must have 'p', the probability of keeping a unit, in (0, 1]")
    p = dropout_param["p"]
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < float(p) <= 1.0:
        raise CnnCheckError(f"dropout_param['p'] is the probability of keeping a unit and must be in (0, 1], got {p!r}")
    mode = param_mode(dropout_param, "dropout_param")
    seed = dropout_param.get("seed")
    if seed is not None:
        seed = geometry._as_int(seed, "dropout_param['seed']")
        if not 0 <= seed < 2 ** 32:
            raise CnnCheckError(f"dropout_param['seed'] must be in [0, 2**32), got {seed}")
    return float(p), mode, seed


def dropout_mask(shape: tuple, p: float, seed: int | None) -> np.ndarray:
    """The course's mask: ``np.random.rand(*shape) < p`` after ``np.random.seed(seed)`` when seed is given.

    Returns
    -------
    mask : ndarray of bool, shape ``shape``; True where a unit is kept
    """
    if seed is not None:
        np.random.seed(seed)
    return np.random.rand(*shape) < p


def dropout_forward(x, dropout_param):
    """Inverted dropout: keep each unit with probability p and scale the kept ones by 1/p.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32
    dropout_param : dict
        'p' : float in (0, 1], the probability of keeping a unit (required).
        'mode' : 'train' or 'test' (required).
        'seed' : int in [0, 2**32), optional; when given, ``np.random.seed(seed)``
        is called before the mask is drawn, so one seed gives one mask.

    Returns
    -------
    out : ndarray, shape and dtype of x
        ``x * mask / p`` in train mode; a copy of x in test mode.
    cache : tuple (x, p, mode, mask)
        x as given (never modified), p (float), mode (str), and ``mask``,
        a bool array of x's shape, True where a unit was kept (train mode),
        or None (test mode).
    """
    p, mode, seed = dropout_settings(dropout_param)
    x_arr = as_float_array(x, "x")
    if mode == "test":
        return x_arr.copy(), (x, p, mode, None)
    mask = dropout_mask(x_arr.shape, p, seed)
    out = x_arr * mask / x_arr.dtype.type(p)
    return out, (x, p, mode, mask)


def dropout_backward(dout, cache):
    """Backward pass of :func:`dropout_forward`: ``dx = dout * mask / p`` (train), ``dout`` (test).

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : tuple (x, p, mode, mask) from :func:`dropout_forward`

    Returns
    -------
    dx : ndarray, shape of x; float32 only when both x and dout are float32
    """
    if not isinstance(cache, tuple) or len(cache) != len(_CACHE):
        got = type(cache).__name__ + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        raise CnnCheckError(f"dropout backward: cache must be the tuple ({', '.join(_CACHE)}) "
                            f"dropout_forward returned, got {got}")
    x, p, mode, mask = cache
    x = as_float_array(x, "x")
    dout = check_dout(dout, x.shape, "dropout")
    dtype = common_dtype(x, dout)
    dout = dout.astype(dtype, copy=False)
    if mode == "test":
        return dout.copy()
    return dout * mask / dtype.type(p)
