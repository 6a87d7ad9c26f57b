"""The course notebook's "sandwich" layers: common chains of layers as one forward and one backward.

Each forward pass calls its parts in order and keeps their caches; each
backward pass calls their backward passes in reverse order::

    out, cache = affine_relu_forward(x, w, b)
    dx, dw, db = affine_relu_backward(dout, cache)

The parts are the ones the course uses: :mod:`cnncheck.layers.naive` for
affine and relu, :mod:`cnncheck.layers.fast` for convolution and max
pooling, :mod:`cnncheck.layers.norm` for batch and layer normalisation.
Inputs are never modified (except the running statistics in ``bn_param``,
which batchnorm updates by design); bad input raises the part's
:class:`cnncheck.errors.CnnCheckError`.
"""

from __future__ import annotations

from cnncheck.errors import CnnCheckError
from cnncheck.layers.fast import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from cnncheck.layers.naive import affine_backward, affine_forward, relu_backward, relu_forward
from cnncheck.layers.norm import batchnorm_backward, batchnorm_forward, layernorm_backward, layernorm_forward


def _parts(cache, names: tuple, layer: str) -> tuple:
    if not isinstance(cache, tuple) or len(cache) != len(names):
        got = type(cache).__name__ + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        raise CnnCheckError(
            f"{layer} backward: cache must be the tuple ({', '.join(names)}) its forward pass returned, got {got}"
        )
    return cache


# -- affine - relu ---------------------------------------------------------------
def affine_relu_forward(x, w, b):
    """Affine then relu: ``out = max(0, x.reshape(N, D) @ w + b)``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (fc_cache, relu_cache)
        The caches of :func:`~cnncheck.layers.naive.affine_forward` and
        :func:`~cnncheck.layers.naive.relu_forward`.
    """
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward pass of :func:`affine_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (fc_cache, relu_cache) from :func:`affine_relu_forward`

    Returns
    -------
    dx : ndarray, shape of x (N, d_1, ..., d_k)
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    fc_cache, relu_cache = _parts(cache, ("fc_cache", "relu_cache"), "affine_relu")
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


# -- conv - relu -------------------------------------------------------------------
def conv_relu_forward(x, w, b, conv_param):
    """Convolution (fast) then relu.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' (>= 1) and 'pad' (>= 0)

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = 1 + (H + 2*pad - HH) // stride`` (floor), likewise for W.
    cache : tuple (conv_cache, relu_cache)
        The caches of :func:`~cnncheck.layers.fast.conv_forward_fast` and
        :func:`~cnncheck.layers.naive.relu_forward`.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward pass of :func:`conv_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : tuple (conv_cache, relu_cache) from :func:`conv_relu_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    conv_cache, relu_cache = _parts(cache, ("conv_cache", "relu_cache"), "conv_relu")
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


# -- conv - relu - pool ---------------------------------------------------------------
def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution (fast), relu, then max pooling (fast).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' (>= 1) and 'pad' (>= 0)
    pool_param : dict with 'pool_height', 'pool_width' and 'stride'

    Returns
    -------
    out : ndarray, shape (N, F, HP, WP)
        With the convolution's ``H_conv = 1 + (H + 2*pad - HH) // stride``,
        ``HP = 1 + (H_conv - pool_height) // pool_stride``, likewise for W;
        trailing rows and columns no pooling window covers get no gradient.
    cache : tuple (conv_cache, relu_cache, pool_cache)
        The caches of the fast convolution, relu and the fast max pooling.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of :func:`conv_relu_pool_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, HP, WP)
    cache : tuple (conv_cache, relu_cache, pool_cache) from :func:`conv_relu_pool_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    conv_cache, relu_cache, pool_cache = _parts(cache, ("conv_cache", "relu_cache", "pool_cache"),
                                                "conv_relu_pool")
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)


# -- affine - norm - relu ---------------------------------------------------------------
def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """Affine, batch normalisation, then relu.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    gamma : ndarray, shape (M,)
    beta : ndarray, shape (M,)
    bn_param : dict
        As for :func:`~cnncheck.layers.norm.batchnorm_forward` ('mode'
        required; running statistics of shape (M,) updated in train mode).

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (fc_cache, bn_cache, relu_cache)
        The caches of affine, batchnorm and relu.
    """
    a, fc_cache = affine_forward(x, w, b)
    an, bn_cache = batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, bn_cache, relu_cache)


def affine_bn_relu_backward(dout, cache):
    """Backward pass of :func:`affine_bn_relu_forward` (batchnorm through :func:`batchnorm_backward`).

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (fc_cache, bn_cache, relu_cache) from :func:`affine_bn_relu_forward`

    Returns
    -------
    dx : ndarray, shape of x (N, d_1, ..., d_k)
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    dgamma : ndarray, shape (M,)
    dbeta : ndarray, shape (M,)
    """
    fc_cache, bn_cache, relu_cache = _parts(cache, ("fc_cache", "bn_cache", "relu_cache"), "affine_bn_relu")
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = batchnorm_backward(dan, bn_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """Affine, layer normalisation, then relu.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    gamma : ndarray, shape (M,)
    beta : ndarray, shape (M,)
    ln_param : dict
        As for :func:`~cnncheck.layers.norm.layernorm_forward` ('eps', default 1e-5).

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (fc_cache, ln_cache, relu_cache)
        The caches of affine, layernorm and relu.
    """
    a, fc_cache = affine_forward(x, w, b)
    an, ln_cache = layernorm_forward(a, gamma, beta, ln_param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, ln_cache, relu_cache)


def affine_ln_relu_backward(dout, cache):
    """Backward pass of :func:`affine_ln_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (fc_cache, ln_cache, relu_cache) from :func:`affine_ln_relu_forward`

    Returns
    -------
    dx : ndarray, shape of x (N, d_1, ..., d_k)
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    dgamma : ndarray, shape (M,)
    dbeta : ndarray, shape (M,)
    """
    fc_cache, ln_cache, relu_cache = _parts(cache, ("fc_cache", "ln_cache", "relu_cache"), "affine_ln_relu")
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = layernorm_backward(dan, ln_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta
