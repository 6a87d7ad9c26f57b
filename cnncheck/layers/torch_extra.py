"""Normalisation, dropout, losses and sandwich layers computed by PyTorch, on numpy arrays in and out.

The independent oracle for :mod:`cnncheck.layers.norm`,
:mod:`cnncheck.layers.dropout`, :mod:`cnncheck.layers.losses` and
:mod:`cnncheck.layers.sandwich`: same names, signatures and parameter dicts.
Forward passes go through :mod:`torch.nn.functional` (``batch_norm``,
``layer_norm``, ``group_norm``, ``cross_entropy``, ``multi_margin_loss``,
``linear``, ``conv2d``, ``relu``, ``max_pool2d``); backward passes run
autograd on the graph the forward pass recorded.  It shares the machinery
and conventions of :mod:`cnncheck.layers.torch_impl`: torch is imported on
the first call only, float32 stays float32 and anything else is float64,
inputs are never modified, and each forward cache is the layer's inputs as
given followed by the recorded graph (``backward`` may be called any number
of times on one cache).  Unlike the four basic torch layers, a backward pass
here needs the cache of the torch forward pass (a graph-less cache would
mean re-running a forward pass that updates running statistics).

Where the course and torch differ, the course wins:

- batchnorm's running variance is updated with the *biased* batch variance
  (torch would use the unbiased one), so the running statistics are updated
  here, in place, from the batch statistics torch computes;
- dropout's mask is the course's, ``np.random.rand(*x.shape) < p`` after
  ``np.random.seed(seed)`` when a seed is given, so one seed gives the same
  mask as :func:`cnncheck.layers.dropout.dropout_forward`; torch computes
  ``x * mask / p`` and its gradient;
- the SVM loss sums the margins over classes (torch's ``multi_margin_loss``
  averages them, so it is multiplied by C).

Torch's batch norm refuses a train-mode batch with one value per feature
(N = 1, or N*H*W = 1 for the spatial layer); the numpy layers accept it.
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.layers.dropout import dropout_mask, dropout_settings
from cnncheck.layers.losses import check_scores_labels
from cnncheck.layers.naive import (
    as_float_array,
    check_dout,
    common_dtype,
    conv_param_values,
    pool_param_values,
)
from cnncheck.layers.norm import (
    bn_settings,
    check_affine_params,
    check_groups,
    check_images,
    check_rows,
    param_eps,
    update_running,
)
from cnncheck.layers.torch_impl import _Graph, _grads, _np_dtype, _out, _run, _tensor, _torch

#: Backend label shown in reports.
BACKEND = "torch"


def _graph(cache, layer: str) -> _Graph:
    """The graph a torch forward pass left at the end of its cache."""
    if isinstance(cache, tuple) and cache and isinstance(cache[-1], _Graph):
        return cache[-1]
    got = type(cache).__name__ + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
    raise CnnCheckError(
        f"{layer} backward: cache must be the tuple the torch forward pass returned (its inputs, then its graph), "
        f"got {got}"
    )


def _backward(dout, cache, layer: str) -> tuple:
    """Every leaf's gradient for upstream ``dout``, checked against the recorded output's shape."""
    graph = _graph(cache, layer)
    dout = check_dout(dout, tuple(graph.out.shape), layer)
    return _grads(graph, dout)


def _batch_stats(x_arr: np.ndarray, dtype: np.dtype, axes: tuple) -> tuple:
    """Mean and biased variance over ``axes``, computed by torch, as numpy arrays."""
    torch = _torch()
    with torch.no_grad():
        x_t = _tensor(x_arr, dtype)
        mean = x_t.mean(dim=axes)
        var = x_t.var(dim=axes, unbiased=False)
    return mean.numpy(), var.numpy()


def _batch_norm(x_arr, gamma_arr, beta_arr, bn_param, stat_axes):
    """torch batch norm over the channel axis 1 with the course's running statistics; returns the graph."""
    # gamma and beta are made contiguous for F.batch_norm: with a contiguous input and a strided weight,
    # PyTorch's CPU backward returns a wrong grad_input (seen with torch 2.13).
    D = x_arr.shape[1]
    dtype = common_dtype(x_arr, gamma_arr, beta_arr)
    mode, eps, momentum, running_mean, running_var = bn_settings(bn_param, D, dtype)
    F = _torch().nn.functional
    if mode == "train":
        mean, var = _batch_stats(x_arr, dtype, stat_axes)
        update_running(running_mean, momentum, mean)
        update_running(running_var, momentum, var)

        def build(x_t, g_t, b_t):
            return F.batch_norm(x_t, None, None, g_t.contiguous(), b_t.contiguous(), training=True, eps=eps)
    else:
        rm = _tensor(np.array(running_mean, dtype=dtype), dtype)
        rv = _tensor(np.array(running_var, dtype=dtype), dtype)

        def build(x_t, g_t, b_t):
            return F.batch_norm(x_t, rm, rv, g_t.contiguous(), b_t.contiguous(), training=False, eps=eps)

    return _run(build, (x_arr, gamma_arr, beta_arr), dtype)


# -- batch and layer normalisation --------------------------------------------------------------
def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation by ``torch.nn.functional.batch_norm``.

    Parameters
    ----------
    x : ndarray, shape (N, D), float64 or float32
    gamma : ndarray, shape (D,)
    beta : ndarray, shape (D,)
    bn_param : dict
        As for :func:`cnncheck.layers.norm.batchnorm_forward`: 'mode' required,
        'eps' (1e-5), 'momentum' (0.9), 'running_mean' and 'running_var'
        (zeros stored when absent; updated in place in train mode with the
        biased batch variance).

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, graph); the first three as given (never modified)
    """
    x_arr = check_rows(x, "batchnorm")
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (x_arr.shape[1],), "batchnorm")
    graph = _batch_norm(x_arr, gamma_arr, beta_arr, bn_param, (0,))
    return _out(graph), (x, gamma, beta, graph)


def batchnorm_backward(dout, cache):
    """Backward pass of :func:`batchnorm_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, graph) from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma : ndarray, shape (D,)
    dbeta : ndarray, shape (D,)
    """
    return _backward(dout, cache, "batchnorm")


#: Autograd has one backward pass; the course's simplified formula gives the same result.
batchnorm_backward_alt = batchnorm_backward


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalisation by ``torch.nn.functional.layer_norm`` over each row's D features.

    Parameters
    ----------
    x : ndarray, shape (N, D), float64 or float32
    gamma : ndarray, shape (D,)
    beta : ndarray, shape (D,)
    ln_param : dict with 'eps' (default 1e-5); other keys are ignored

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, graph); the first three as given (never modified)
    """
    x_arr = check_rows(x, "layernorm")
    D = x_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (D,), "layernorm")
    eps = param_eps(ln_param, "ln_param")
    F = _torch().nn.functional
    graph = _run(lambda x_t, g_t, b_t: F.layer_norm(x_t, (D,), g_t, b_t, eps),
                 (x_arr, gamma_arr, beta_arr), common_dtype(x_arr, gamma_arr, beta_arr))
    return _out(graph), (x, gamma, beta, graph)


def layernorm_backward(dout, cache):
    """Backward pass of :func:`layernorm_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, graph) from :func:`layernorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma : ndarray, shape (D,)
    dbeta : ndarray, shape (D,)
    """
    return _backward(dout, cache, "layernorm")


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Spatial batch normalisation by ``torch.nn.functional.batch_norm`` on (N, C, H, W).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    gamma : ndarray, shape (C,)
    beta : ndarray, shape (C,)
    bn_param : dict, as for :func:`batchnorm_forward` with D = C

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, graph); the first three as given (never modified)
    """
    x_arr = check_images(x, "spatial batchnorm")
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (x_arr.shape[1],), "spatial batchnorm")
    graph = _batch_norm(x_arr, gamma_arr, beta_arr, bn_param, (0, 2, 3))
    return _out(graph), (x, gamma, beta, graph)


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_batchnorm_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, graph) from :func:`spatial_batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma : ndarray, shape (C,)
    dbeta : ndarray, shape (C,)
    """
    return _backward(dout, cache, "spatial batchnorm")


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Spatial group normalisation by ``torch.nn.functional.group_norm``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    gamma : ndarray, shape (1, C, 1, 1)
    beta : ndarray, shape (1, C, 1, 1)
    G : int, >= 1, dividing C
    gn_param : dict with 'eps' (default 1e-5); other keys are ignored

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, G, graph); the first four as given (never modified)
    """
    x_arr = check_images(x, "spatial groupnorm")
    C = x_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (1, C, 1, 1), "spatial groupnorm")
    groups = check_groups(G, C)
    eps = param_eps(gn_param, "gn_param")
    F = _torch().nn.functional

    def build(x_t, g_t, b_t):
        return F.group_norm(x_t, groups, g_t.reshape(C), b_t.reshape(C), eps)

    graph = _run(build, (x_arr, gamma_arr, beta_arr), common_dtype(x_arr, gamma_arr, beta_arr))
    return _out(graph), (x, gamma, beta, G, graph)


def spatial_groupnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_groupnorm_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, G, graph) from :func:`spatial_groupnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma : ndarray, shape (1, C, 1, 1)
    dbeta : ndarray, shape (1, C, 1, 1)
    """
    return _backward(dout, cache, "spatial groupnorm")


# -- dropout ----------------------------------------------------------------------------
def _dropout_graph(x_arr: np.ndarray, mask, p: float, dtype: np.dtype) -> _Graph:
    if mask is None:
        return _run(lambda x_t: x_t.clone(), (x_arr,), dtype)
    mask_t = _tensor(mask, dtype)
    return _run(lambda x_t: x_t * mask_t / p, (x_arr,), dtype)


def dropout_forward(x, dropout_param):
    """Inverted dropout with the course's mask, ``x * mask / p`` computed by torch.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32
    dropout_param : dict
        As for :func:`cnncheck.layers.dropout.dropout_forward`: 'p' (probability
        of keeping a unit), 'mode', optional 'seed' (``np.random.seed(seed)``
        before the mask is drawn).

    Returns
    -------
    out : ndarray, shape and dtype of x; a copy of x in test mode
    cache : tuple (x, p, mode, mask, graph)
        x as given (never modified), p, mode, the bool mask (None in test
        mode) and the graph.
    """
    p, mode, seed = dropout_settings(dropout_param)
    x_arr = as_float_array(x, "x")
    mask = None if mode == "test" else dropout_mask(x_arr.shape, p, seed)
    graph = _dropout_graph(x_arr, mask, p, x_arr.dtype)
    return _out(graph), (x, p, mode, mask, graph)


def dropout_backward(dout, cache):
    """Backward pass of :func:`dropout_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : tuple (x, p, mode, mask, graph) from :func:`dropout_forward`

    Returns
    -------
    dx : ndarray, shape of x; float32 only when both x and dout are float32
    """
    graph = _graph(cache, "dropout")
    dout = check_dout(dout, tuple(graph.out.shape), "dropout")
    if dout.dtype == np.float64 and _np_dtype(graph.out) == np.float32:
        # float32 x with a float64 dout: the numpy result is float64, so differentiate in float64.
        x, p, _, mask, _ = cache
        graph = _dropout_graph(as_float_array(x, "x"), mask, p, np.dtype(np.float64))
    (dx,) = _grads(graph, dout)
    return dx


# -- losses -----------------------------------------------------------------------------
def _loss_and_grad(x, y, name: str, build) -> tuple:
    x_arr, y_arr = check_scores_labels(x, y, name)
    torch = _torch()
    y_t = torch.from_numpy(np.ascontiguousarray(y_arr))
    graph = _run(lambda x_t: build(x_t, y_t), (x_arr,), x_arr.dtype)
    (dx,) = torch.autograd.grad(graph.out, graph.leaves)
    return float(graph.out.detach()), dx.numpy()


def softmax_loss(x, y):
    """Softmax cross-entropy averaged over the batch, by ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    x : ndarray, shape (N, C), float64 or float32
    y : ndarray, shape (N,), int in [0, C)

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of x
    """
    F = _torch().nn.functional
    return _loss_and_grad(x, y, "softmax loss", lambda x_t, y_t: F.cross_entropy(x_t, y_t))


def svm_loss(x, y):
    """Multiclass SVM loss (margin 1, summed over classes, averaged over the batch) by torch.

    ``C * torch.nn.functional.multi_margin_loss(x, y, p=1, margin=1)``: torch
    divides each sample's sum of margins by C.

    Parameters
    ----------
    x : ndarray, shape (N, C), float64 or float32
    y : ndarray, shape (N,), int in [0, C)

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of x
    """
    F = _torch().nn.functional

    def build(x_t, y_t):
        return F.multi_margin_loss(x_t, y_t, p=1, margin=1.0) * x_t.shape[1]

    return _loss_and_grad(x, y, "svm loss", build)


# -- sandwich layers ------------------------------------------------------------------------
def _affine_arrays(x, w, b):
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    N, _ = geometry.affine_output_shape(x_arr.shape, w_arr.shape, b_arr.shape)
    return x_arr, w_arr, b_arr, N


def affine_relu_forward(x, w, b):
    """``relu(x.reshape(N, D) @ w + b)`` by ``linear`` and ``relu``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b, graph); the first three as given (never modified)
    """
    x_arr, w_arr, b_arr, N = _affine_arrays(x, w, b)
    F = _torch().nn.functional
    graph = _run(lambda x_t, w_t, b_t: F.relu(F.linear(x_t.reshape(N, -1), w_t.t(), b_t)),
                 (x_arr, w_arr, b_arr), common_dtype(x_arr, w_arr, b_arr))
    return _out(graph), (x, w, b, graph)


def affine_relu_backward(dout, cache):
    """Backward pass of :func:`affine_relu_forward`, by autograd: (dx, dw, db)."""
    return _backward(dout, cache, "affine_relu")


def _conv_arrays(x, w, b, conv_param):
    stride, pad = conv_param_values(conv_param)
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    _, F_out, _, _ = geometry.conv_output_shape(x_arr.shape, w_arr.shape, stride, pad)
    if b_arr.shape != (F_out,):
        raise CnnCheckError(f"conv b must have shape ({F_out},) for {F_out} filters, got {b_arr.shape}")
    return x_arr, w_arr, b_arr, stride, pad


def conv_relu_forward(x, w, b, conv_param):
    """``relu(conv2d(x, w, b))`` by torch.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' and 'pad'

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out), ``H_out = 1 + (H + 2*pad - HH) // stride``
    cache : tuple (x, w, b, conv_param, graph); the first four as given (never modified)
    """
    x_arr, w_arr, b_arr, stride, pad = _conv_arrays(x, w, b, conv_param)
    F = _torch().nn.functional
    graph = _run(lambda x_t, w_t, b_t: F.relu(F.conv2d(x_t, w_t, b_t, stride=stride, padding=pad)),
                 (x_arr, w_arr, b_arr), common_dtype(x_arr, w_arr, b_arr))
    return _out(graph), (x, w, b, conv_param, graph)


def conv_relu_backward(dout, cache):
    """Backward pass of :func:`conv_relu_forward`, by autograd: (dx, dw, db)."""
    return _backward(dout, cache, "conv_relu")


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """``max_pool2d(relu(conv2d(x, w, b)))`` by torch.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' and 'pad'
    pool_param : dict with 'pool_height', 'pool_width' and 'stride'

    Returns
    -------
    out : ndarray, shape (N, F, HP, WP)
    cache : tuple (x, w, b, conv_param, pool_param, graph); the first five as given (never modified)
    """
    x_arr, w_arr, b_arr, stride, pad = _conv_arrays(x, w, b, conv_param)
    ph, pw, pool_stride = pool_param_values(pool_param)
    N, F_out, H_conv, W_conv = geometry.conv_output_shape(x_arr.shape, w_arr.shape, stride, pad)
    geometry.pool_output_shape((N, F_out, H_conv, W_conv), ph, pw, pool_stride)
    F = _torch().nn.functional

    def build(x_t, w_t, b_t):
        return F.max_pool2d(F.relu(F.conv2d(x_t, w_t, b_t, stride=stride, padding=pad)), (ph, pw),
                            stride=pool_stride)

    graph = _run(build, (x_arr, w_arr, b_arr), common_dtype(x_arr, w_arr, b_arr))
    return _out(graph), (x, w, b, conv_param, pool_param, graph)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of :func:`conv_relu_pool_forward`, by autograd: (dx, dw, db)."""
    return _backward(dout, cache, "conv_relu_pool")


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """``relu(batch_norm(x.reshape(N, D) @ w + b))`` by torch, with the course's running statistics.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    gamma, beta : ndarray, shape (M,)
    bn_param : dict, as for :func:`batchnorm_forward` with M features

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b, gamma, beta, graph); the first five as given (never modified)
    """
    x_arr, w_arr, b_arr, N = _affine_arrays(x, w, b)
    M = w_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (M,), "affine_bn_relu")
    dtype = common_dtype(x_arr, w_arr, b_arr, gamma_arr, beta_arr)
    mode, eps, momentum, running_mean, running_var = bn_settings(bn_param, M, dtype)
    F = _torch().nn.functional
    if mode == "train":
        stats = {}

        def norm(a_t, g_t, be_t):
            with _torch().no_grad():
                stats["mean"], stats["var"] = a_t.mean(dim=0).numpy(), a_t.var(dim=0, unbiased=False).numpy()
            return F.batch_norm(a_t, None, None, g_t.contiguous(), be_t.contiguous(), training=True, eps=eps)
    else:
        rm = _tensor(np.array(running_mean, dtype=dtype), dtype)
        rv = _tensor(np.array(running_var, dtype=dtype), dtype)

        def norm(a_t, g_t, be_t):
            return F.batch_norm(a_t, rm, rv, g_t.contiguous(), be_t.contiguous(), training=False, eps=eps)

    def build(x_t, w_t, b_t, g_t, be_t):
        return F.relu(norm(F.linear(x_t.reshape(N, -1), w_t.t(), b_t), g_t, be_t))

    graph = _run(build, (x_arr, w_arr, b_arr, gamma_arr, beta_arr), dtype)
    if mode == "train":
        update_running(running_mean, momentum, stats["mean"])
        update_running(running_var, momentum, stats["var"])
    return _out(graph), (x, w, b, gamma, beta, graph)


def affine_bn_relu_backward(dout, cache):
    """Backward pass of :func:`affine_bn_relu_forward`, by autograd: (dx, dw, db, dgamma, dbeta)."""
    return _backward(dout, cache, "affine_bn_relu")


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """``relu(layer_norm(x.reshape(N, D) @ w + b))`` by torch.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    gamma, beta : ndarray, shape (M,)
    ln_param : dict with 'eps' (default 1e-5)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b, gamma, beta, graph); the first five as given (never modified)
    """
    x_arr, w_arr, b_arr, N = _affine_arrays(x, w, b)
    M = w_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (M,), "affine_ln_relu")
    eps = param_eps(ln_param, "ln_param")
    F = _torch().nn.functional

    def build(x_t, w_t, b_t, g_t, be_t):
        return F.relu(F.layer_norm(F.linear(x_t.reshape(N, -1), w_t.t(), b_t), (M,), g_t, be_t, eps))

    graph = _run(build, (x_arr, w_arr, b_arr, gamma_arr, beta_arr),
                 common_dtype(x_arr, w_arr, b_arr, gamma_arr, beta_arr))
    return _out(graph), (x, w, b, gamma, beta, graph)


def affine_ln_relu_backward(dout, cache):
    """Backward pass of :func:`affine_ln_relu_forward`, by autograd: (dx, dw, db, dgamma, dbeta)."""
    return _backward(dout, cache, "affine_ln_relu")
