"""The built-in layer specs (affine, relu, conv, pool) and their implementations.

Defaults for ``gradcheck`` reproduce the course notebook's checks; defaults for
``bench`` reproduce the course notebook's timing cells (affine and relu at sizes of the
same order as the conv case).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.registry import Registry
from cnncheck.specs import Impl, LayerSpec, SampleInput


def _shape(value, name: str = "shape") -> tuple:
    """Normalise a shape to a tuple of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        shape = tuple(geometry._as_int(v, name) for v in value)
    except TypeError:
        raise CnnCheckError(f"{name} must be a sequence of integers, got {value!r}") from None
    if any(d < 1 for d in shape):
        raise CnnCheckError(f"{name} must have positive sizes, got {shape}")
    return shape


def _kernel(value) -> tuple:
    """A kernel given as K or (HH, WW) -> (HH, WW)."""
    kernel = _shape(value, "kernel")
    if len(kernel) == 1:
        kernel = kernel * 2
    if len(kernel) != 2:
        raise CnnCheckError(f"kernel must be K or HH,WW, got {kernel}")
    return kernel


def _positive(value, name: str) -> int:
    number = geometry._as_int(value, name)
    if number < 1:
        raise CnnCheckError(f"{name} must be >= 1, got {number}")
    return number


def _randn(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype, copy=False)


def _away_from_zero(rng, shape, dtype, margin: float) -> np.ndarray:
    """Normal samples pushed ``margin`` away from 0 (relu's kink)."""
    x = rng.standard_normal(shape)
    x = np.where(x >= 0, x + margin, x - margin)
    return x.astype(dtype)


def _no_pool_ties(rng, p, dtype, margin: float) -> np.ndarray:
    """Pooling inputs whose values in any one window differ by at least ``2 * margin``.

    Every element gets a colour ``(row % pool_height) * pool_width + col % pool_width``,
    distinct within any window; its value is ``step * (A * K + colour + U)``
    with ``K`` colours, ``A`` a random integer below 8 and ``U`` uniform in
    [0, 0.5), so the maximum of each window is at a random place and ties are
    at least ``step / 2 >= 2 * margin`` away, while values stay of order one
    whatever the input size.  With ``margin == 0`` plain normal samples are returned.
    """
    shape = p["shape"]
    if margin <= 0:
        return _randn(rng, shape, dtype)
    ph, pw = p["pool_height"], p["pool_width"]
    K, levels = ph * pw, 8
    step = max(4.0 * margin, 2.0 / (levels * K))
    H, W = shape[2], shape[3]
    colour = (np.arange(H)[:, None] % ph) * pw + np.arange(W)[None, :] % pw
    value = rng.integers(0, levels, size=shape) * K + colour + 0.5 * rng.random(shape)
    return (step * (value - levels * K / 2.0)).astype(dtype)


# -- affine -------------------------------------------------------------------
def _affine_resolve(p):
    shape = _shape(p["shape"])
    if len(shape) < 2:
        raise CnnCheckError(f"affine --shape must be N,D (or N,d1,...,dk), got {shape}")
    return {"shape": shape, "filters": _positive(p["filters"], "filters")}


def _affine_D(p) -> int:
    return math.prod(p["shape"][1:])


def _affine_out(p):
    return (p["shape"][0], p["filters"])


def _affine_inputs(p, rng, dtype, margin):
    D, M = _affine_D(p), p["filters"]
    arrays = {"x": _randn(rng, p["shape"], dtype), "w": _randn(rng, (D, M), dtype), "b": _randn(rng, (M,), dtype)}
    return SampleInput(arrays, None, _randn(rng, _affine_out(p), dtype))


def _affine_flops(p):
    fwd = 2 * p["shape"][0] * _affine_D(p) * p["filters"]
    return fwd, 2 * fwd


# -- relu ---------------------------------------------------------------------
def _relu_resolve(p):
    return {"shape": _shape(p["shape"])}


def _relu_inputs(p, rng, dtype, margin):
    x = _away_from_zero(rng, p["shape"], dtype, margin)
    return SampleInput({"x": x}, None, _randn(rng, p["shape"], dtype))


def _relu_bytes(p, itemsize):
    n = math.prod(p["shape"]) * itemsize
    return 2 * n, 3 * n


# -- conv ---------------------------------------------------------------------
def _conv_resolve(p):
    shape = _shape(p["shape"])
    if len(shape) != 4:
        raise CnnCheckError(f"conv --shape must be N,C,H,W, got {','.join(map(str, shape))}")
    out = {
        "shape": shape,
        "filters": _positive(p["filters"], "filters"),
        "kernel": _kernel(p["kernel"]),
        "stride": geometry._as_int(p["stride"], "stride"),
        "pad": geometry._as_int(p["pad"], "pad"),
    }
    _conv_out(out)
    return out


def _conv_w_shape(p):
    return (p["filters"], p["shape"][1], *p["kernel"])


def _conv_out(p):
    return geometry.conv_output_shape(p["shape"], _conv_w_shape(p), p["stride"], p["pad"])


def _conv_inputs(p, rng, dtype, margin):
    arrays = {
        "x": _randn(rng, p["shape"], dtype),
        "w": _randn(rng, _conv_w_shape(p), dtype),
        "b": _randn(rng, (p["filters"],), dtype),
    }
    param = {"stride": p["stride"], "pad": p["pad"]}
    return SampleInput(arrays, param, _randn(rng, _conv_out(p), dtype))


def _conv_flops(p):
    N, F, H_out, W_out = _conv_out(p)
    C = p["shape"][1]
    HH, WW = p["kernel"]
    fwd = 2 * N * F * H_out * W_out * C * HH * WW
    return fwd, 2 * fwd


# -- pool ---------------------------------------------------------------------
def _pool_resolve(p):
    shape = _shape(p["shape"])
    if len(shape) != 4:
        raise CnnCheckError(f"pool --shape must be N,C,H,W, got {','.join(map(str, shape))}")
    out = {
        "shape": shape,
        "pool_height": geometry._as_int(p["pool_height"], "pool_height"),
        "pool_width": geometry._as_int(p["pool_width"], "pool_width"),
        "stride": geometry._as_int(p["stride"], "stride"),
    }
    _pool_out(out)
    return out


def _pool_out(p):
    return geometry.pool_output_shape(p["shape"], p["pool_height"], p["pool_width"], p["stride"])


def _pool_inputs(p, rng, dtype, margin):
    x = _no_pool_ties(rng, p, dtype, margin)
    param = {"pool_height": p["pool_height"], "pool_width": p["pool_width"], "stride": p["stride"]}
    return SampleInput({"x": x}, param, _randn(rng, _pool_out(p), dtype))


def _pool_bytes(p, itemsize):
    n_in = math.prod(p["shape"]) * itemsize
    n_out = math.prod(_pool_out(p)) * itemsize
    return n_in + n_out, n_in + n_out


AFFINE = LayerSpec(
    name="affine",
    title="Affine (fully connected)",
    grads=("x", "w", "b"),
    params=("shape", "filters"),
    gradcheck_defaults={"shape": (4, 32), "filters": 2},
    bench_defaults={"shape": (100, 3072), "filters": 100},
    resolve_fn=_affine_resolve,
    inputs_fn=_affine_inputs,
    output_shape_fn=_affine_out,
    flops_fn=_affine_flops,
    seed_functions={"naive": ("affine_forward", "affine_backward")},
)

RELU = LayerSpec(
    name="relu",
    title="ReLU",
    grads=("x",),
    params=("shape",),
    gradcheck_defaults={"shape": (2, 3, 4, 4)},
    bench_defaults={"shape": (100, 25, 16, 16)},
    resolve_fn=_relu_resolve,
    inputs_fn=_relu_inputs,
    output_shape_fn=lambda p: p["shape"],
    bytes_fn=_relu_bytes,
    seed_functions={"naive": ("relu_forward", "relu_backward")},
    has_kinks=True,
)

CONV = LayerSpec(
    name="conv",
    title="Convolution",
    grads=("x", "w", "b"),
    params=("shape", "filters", "kernel", "stride", "pad"),
    gradcheck_defaults={"shape": (4, 3, 5, 5), "filters": 2, "kernel": (3, 3), "stride": 2, "pad": 1},
    bench_defaults={"shape": (100, 3, 31, 31), "filters": 25, "kernel": (3, 3), "stride": 2, "pad": 1},
    resolve_fn=_conv_resolve,
    inputs_fn=_conv_inputs,
    output_shape_fn=_conv_out,
    flops_fn=_conv_flops,
    seed_functions={
        "naive": ("conv_forward_naive", "conv_backward_naive"),
        "fast": ("conv_forward_fast", "conv_backward_fast"),
    },
)

POOL = LayerSpec(
    name="pool",
    title="Max pooling",
    grads=("x",),
    params=("shape", "pool_height", "pool_width", "stride"),
    gradcheck_defaults={"shape": (3, 2, 8, 8), "pool_height": 2, "pool_width": 2, "stride": 2},
    bench_defaults={"shape": (100, 3, 32, 32), "pool_height": 2, "pool_width": 2, "stride": 2},
    resolve_fn=_pool_resolve,
    inputs_fn=_pool_inputs,
    output_shape_fn=_pool_out,
    bytes_fn=_pool_bytes,
    seed_functions={
        "naive": ("max_pool_forward_naive", "max_pool_backward_naive"),
        "fast": ("max_pool_forward_fast", "max_pool_backward_fast"),
    },
    has_kinks=True,
)

SPECS = (AFFINE, RELU, CONV, POOL)


def builtin_registry() -> Registry:
    """A registry holding the four built-in layers and cnncheck's own implementations.

    conv and pool get ``naive`` (loops, the reference) and ``fast`` (im2col on
    the compiled kernels or their numpy fallback); affine has one vectorised
    implementation, named ``numpy``; relu has ``numpy`` (the reference) and
    ``fast`` (one-pass compiled kernels or their numpy fallback).  When PyTorch is
    installed every layer also gets ``torch`` (imported on first use).
    """
    from cnncheck import layers
    from cnncheck.layers import fast

    registry = Registry()
    for spec in SPECS:
        registry.add_layer(spec)
    registry.add_impl(Impl("affine", "numpy", layers.affine_forward, layers.affine_backward, "numpy"))
    registry.add_impl(Impl("relu", "numpy", layers.relu_forward, layers.relu_backward, "numpy"))
    registry.add_impl(Impl("relu", "fast", layers.relu_forward_fast, layers.relu_backward_fast, fast.BACKEND))
    registry.add_impl(Impl("conv", "naive", layers.conv_forward_naive, layers.conv_backward_naive, "python loops"))
    registry.add_impl(Impl("conv", "fast", layers.conv_forward_fast, layers.conv_backward_fast, fast.BACKEND))
    registry.add_impl(Impl("pool", "naive", layers.max_pool_forward_naive, layers.max_pool_backward_naive,
                           "python loops"))
    registry.add_impl(Impl("pool", "fast", layers.max_pool_forward_fast, layers.max_pool_backward_fast,
                           fast.BACKEND))
    if importlib.util.find_spec("torch") is not None:
        # Present when PyTorch is installed; torch itself is imported on the first call.
        from cnncheck.layers import torch_impl as tl

        for name, forward, backward in (("affine", tl.affine_forward, tl.affine_backward),
                                        ("relu", tl.relu_forward, tl.relu_backward),
                                        ("conv", tl.conv_forward, tl.conv_backward),
                                        ("pool", tl.max_pool_forward, tl.max_pool_backward)):
            registry.add_impl(Impl(name, "torch", forward, backward, tl.BACKEND))
    return registry
