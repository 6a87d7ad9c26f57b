"""The four layers computed by PyTorch, on numpy arrays in and out.

Forward passes go through :mod:`torch.nn.functional`; backward passes run
autograd on the graph the forward pass recorded.  These functions follow the
course notebook's contract like every other implementation::

    out, cache = <layer>_forward(x, ..., params)
    grads = <layer>_backward(dout, cache)

PyTorch is optional: this module imports without it, and torch is imported
on the first call only.  That first call also sets torch's intra-op thread
count (process-wide, once) to the number of threads numpy's BLAS uses, read
with threadpoolctl, so timings against numpy-based implementations compare
like with like.

Conventions shared with :mod:`cnncheck.layers.naive`:

- the same validation helpers, so a bad shape or parameter raises
  ``ValueError`` (:class:`cnncheck.errors.CnnCheckError`) with the same message;
- float32 inputs stay float32, anything else is computed in float64, and a
  mix is computed in float64;
- inputs are never modified: tensors share memory with the numpy inputs
  (no copy), and autograd only reads them;
- the cache starts with the inputs as given, exactly as the naive cache does,
  followed by the recorded graph.  ``backward`` can be called any number of
  times on one cache (the graph is retained), and it also accepts a cache
  without a graph (the naive layout), in which case it re-runs the forward
  pass first.

Outputs and gradients are numpy arrays over fresh memory: they alias no
input, and writing into them changes neither the cache nor a later backward
pass.  Max-pool ties go to the first maximum of a window in row-major order,
as in the naive layer.
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.layers.naive import (
    as_float_array,
    check_dout,
    common_dtype,
    conv_param_values,
    pool_param_values,
)

#: Backend label shown in reports.
BACKEND = "torch"

_TORCH = None


def _torch():
    """Import torch on first use and match its thread count to numpy's BLAS."""
    global _TORCH
    if _TORCH is None:
        threads = _blas_threads()
        import torch

        if threads:
            torch.set_num_threads(threads)
        _TORCH = torch
    return _TORCH


def _blas_threads() -> int | None:
    """Threads numpy's BLAS uses, or None when threadpoolctl cannot tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts) if counts else None


class _Graph:
    """What one forward pass recorded: the output tensor and the leaf tensors it depends on."""

    __slots__ = ("leaves", "out")

    def __init__(self, out, leaves) -> None:
        self.out = out
        self.leaves = leaves


def _tensor(arr: np.ndarray, dtype: np.dtype):
    """A tensor sharing memory with ``arr`` cast to ``dtype``.

    A cast, a negative stride or a read-only array cost one copy; otherwise the
    tensor is a view of ``arr``.  Nothing here or in autograd writes to it.
    """
    arr = arr.astype(dtype, copy=False)
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = np.array(arr, copy=True)
    return _torch().from_numpy(arr)


def _run(build, arrays, dtype) -> _Graph:
    """Run ``build(*leaves)`` with gradients recorded, whatever the caller's grad mode."""
    torch = _torch()
    with torch.enable_grad():
        leaves = tuple(_tensor(a, dtype).requires_grad_(True) for a in arrays)
        out = build(*leaves)
    return _Graph(out, leaves)


def _out(graph: _Graph) -> np.ndarray:
    """The forward output as a numpy array (a view of the output tensor, which no graph node reads)."""
    return graph.out.detach().numpy()


def _grads(graph: _Graph, dout: np.ndarray) -> tuple:
    """Gradients of every leaf for upstream ``dout`` (already validated), as numpy arrays."""
    dout_t = _tensor(dout, _np_dtype(graph.out))
    grads = _torch().autograd.grad(graph.out, graph.leaves, dout_t, retain_graph=True)
    return tuple(_own(g, dout) for g in grads)


def _np_dtype(t) -> np.dtype:
    """The numpy dtype of a float32 or float64 tensor."""
    return np.dtype(np.float32) if t.dtype == _torch().float32 else np.dtype(np.float64)


def _own(t, dout: np.ndarray) -> np.ndarray:
    """``t`` as a numpy array that aliases neither ``dout`` nor any tensor autograd keeps."""
    arr = t.numpy()
    if np.may_share_memory(arr, dout):
        arr = arr.copy()
    return arr


def _graph_of(cache, n_inputs: int, forward) -> _Graph:
    """The graph recorded in ``cache``, or one rebuilt by ``forward`` from a graph-less (naive) cache."""
    if isinstance(cache, tuple):
        if len(cache) == n_inputs + 1 and isinstance(cache[-1], _Graph):
            return cache[-1]
        if len(cache) == n_inputs:
            return forward(*cache)[1][-1]
    got = type(cache).__name__ + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
    raise CnnCheckError(
        f"cache must be the tuple the matching forward pass returned ({n_inputs} input(s), then its graph), got {got}"
    )


# -- affine ---------------------------------------------------------------------
def affine_forward(x, w, b):
    """Fully connected layer ``out = x.reshape(N, D) @ w + b``, computed by ``torch.nn.functional.linear``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b, graph); x, w and b as given (never modified)
    """
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    N, _ = geometry.affine_output_shape(x_arr.shape, w_arr.shape, b_arr.shape)
    F = _torch().nn.functional

    def build(x_t, w_t, b_t):
        return F.linear(x_t.reshape(N, -1), w_t.t(), b_t)

    graph = _run(build, (x_arr, w_arr, b_arr), common_dtype(x_arr, w_arr, b_arr))
    return _out(graph), (x, w, b, graph)


def affine_backward(dout, cache):
    """Backward pass of :func:`affine_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (x, w, b, graph) from :func:`affine_forward` (or (x, w, b))

    Returns
    -------
    dx : ndarray, shape of x (N, d_1, ..., d_k)
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    graph = _graph_of(cache, 3, affine_forward)
    dout = check_dout(dout, tuple(graph.out.shape), "affine")
    return _grads(graph, dout)


# -- relu -----------------------------------------------------------------------
def relu_forward(x):
    """Rectified linear unit ``max(0, x)``, computed by ``torch.nn.functional.threshold(x, 0, 0)``.

    ``threshold`` is relu, and its graph keeps the input rather than the output,
    so changing the returned ``out`` in place cannot alter the backward pass.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32

    Returns
    -------
    out : ndarray, same shape and dtype as x
    cache : tuple (x, graph); x as given (never modified)
    """
    x_arr = as_float_array(x, "x")
    F = _torch().nn.functional
    graph = _run(lambda x_t: F.threshold(x_t, 0.0, 0.0), (x_arr,), x_arr.dtype)
    return _out(graph), (x, graph)


def relu_backward(dout, cache):
    """Backward pass of :func:`relu_forward`: ``dx = dout * (x > 0)``, by autograd.

    The gradient at exactly 0 is 0.

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : tuple (x, graph) from :func:`relu_forward` (or the naive cache, x)

    Returns
    -------
    dx : ndarray, shape of x; float32 only when both x and dout are float32
    """
    if isinstance(cache, np.ndarray):
        cache = (cache,)
    graph = _graph_of(cache, 1, relu_forward)
    dout = check_dout(dout, tuple(graph.out.shape), "relu")
    if dout.dtype == np.float64 and _np_dtype(graph.out) == np.float32:
        # float32 x with a float64 dout: the naive result is float64, so differentiate in float64.
        graph = relu_forward(np.asarray(graph.leaves[0].detach().numpy(), dtype=np.float64))[1][-1]
    (dx,) = _grads(graph, dout)
    return dx


# -- convolution ----------------------------------------------------------------
def conv_forward(x, w, b, conv_param):
    """Convolution (cross-correlation) computed by ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' (>= 1) and 'pad' (>= 0, zero padding on every side)

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = 1 + (H + 2*pad - HH) // stride`` (floor); rows and columns of
        x that no window reaches do not contribute.
    cache : tuple (x, w, b, conv_param, graph); the first four as given (never modified)
    """
    stride, pad = conv_param_values(conv_param)
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    _, F_out, _, _ = geometry.conv_output_shape(x_arr.shape, w_arr.shape, stride, pad)
    if b_arr.shape != (F_out,):
        raise CnnCheckError(f"conv b must have shape ({F_out},) for {F_out} filters, got {b_arr.shape}")
    F = _torch().nn.functional

    def build(x_t, w_t, b_t):
        return F.conv2d(x_t, w_t, b_t, stride=stride, padding=pad)

    graph = _run(build, (x_arr, w_arr, b_arr), common_dtype(x_arr, w_arr, b_arr))
    return _out(graph), (x, w, b, conv_param, graph)


def conv_backward(dout, cache):
    """Backward pass of :func:`conv_forward`, by autograd.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : tuple (x, w, b, conv_param, graph) from :func:`conv_forward` (or the first four)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); zero where no window reached
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    graph = _graph_of(cache, 4, conv_forward)
    dout = check_dout(dout, tuple(graph.out.shape), "conv")
    return _grads(graph, dout)


# -- max pooling ----------------------------------------------------------------
def max_pool_forward(x, pool_param):
    """Max pooling without padding, computed by ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    pool_param : dict with 'pool_height', 'pool_width' and 'stride'

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = 1 + (H - pool_height) // stride``; trailing rows and columns
        no window covers are ignored.
    cache : tuple (x, pool_param, graph); the first two as given (never modified)

    Notes
    -----
    Ties: each window's gradient goes to its first maximum in row-major
    window order, the index torch saves in the forward pass.
    """
    ph, pw, stride = pool_param_values(pool_param)
    x_arr = as_float_array(x, "x")
    geometry.pool_output_shape(x_arr.shape, ph, pw, stride)
    F = _torch().nn.functional
    graph = _run(lambda x_t: F.max_pool2d(x_t, (ph, pw), stride=stride), (x_arr,), x_arr.dtype)
    return _out(graph), (x, pool_param, graph)


def max_pool_backward(dout, cache):
    """Backward pass of :func:`max_pool_forward`, by autograd (a scatter through the saved indices).

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : tuple (x, pool_param, graph) from :func:`max_pool_forward` (or the first two)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); each window's gradient lands on its first
        maximum in row-major order, accumulated where windows overlap.
    """
    graph = _graph_of(cache, 2, max_pool_forward)
    dout = check_dout(dout, tuple(graph.out.shape), "pool")
    (dx,) = _grads(graph, dout)
    return dx
