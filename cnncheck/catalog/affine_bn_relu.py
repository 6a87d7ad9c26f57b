"""Affine, batch normalisation, then ReLU: ``affine_bn_relu_forward(x, w, b, gamma, beta, bn_param)``.

x (N, d_1, ..., d_k) flattened to (N, D), w (D, M), b (M,), gamma and beta
(M,); out (N, M).  ``bn_param`` is batchnorm's (``mode``, ``eps``,
``momentum``, running statistics of shape (M,) updated in place in train
mode: the layer's state); ``affine_bn_relu_backward`` returns (dx, dw, db,
dgamma, dbeta).  A relu sits inside, so the layer has kinks.  The course
assignment makes this sandwich optional.  The battery runs in test mode: in
train mode db is identically 0, which centred differences see as rounding
noise; test mode is also the default for bench and custom checks (train
mode can still be asked for, with ``-p mode=train``).
"""

from __future__ import annotations

import numpy as np

from cnncheck.catalog import affine
from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import bn_param, check_eps, dim, spread
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    M, s = p["filters"], spread(margin)
    x = s * randn(rng, p["shape"], dtype)
    w = s * randn(rng, (affine.D(p), M), dtype)
    b = s * randn(rng, (M,), dtype)
    # The population statistics of what batchnorm sees, a = x @ w + b over x ~ N(0, s^2): whatever N is.
    mean, std = b.astype(np.float64), s * np.sqrt(np.square(w.astype(np.float64)).sum(axis=0))
    running_mean = (mean + 0.5 * std * rng.standard_normal(M)).astype(dtype)
    running_var = (std ** 2 * rng.uniform(0.5, 1.5, M)).astype(dtype)
    values = {"x": x, "w": w, "b": b, "gamma": s * randn(rng, (M,), dtype), "beta": s * randn(rng, (M,), dtype),
              "bn_param": bn_param(p, running_mean, running_var)}
    return Sample(values, randn(rng, affine.output_shape(p), dtype))


def shapes(p) -> dict:
    M = p["filters"]
    found = affine.shapes(p)
    found.update({"gamma": (M,), "beta": (M,), "running_mean": (M,), "running_var": (M,),
                  "workspace": (4 * p["shape"][0] * M,)})
    return found


def check(p) -> None:
    affine.check(p)
    check_eps(p, "affine_bn_relu")
    if p["mode"] == "train" and p["shape"][0] == 1:
        raise CnnCheckError("affine_bn_relu in train mode needs N > 1 (a batch of one has no variance)")


SPEC = LayerSpec(
    name="affine_bn_relu",
    title="Affine - batch normalisation - ReLU",
    functions={"": ("affine_bn_relu_forward", "affine_bn_relu_backward")},
    inputs=(Input("x"), Input("w"), Input("b"), Input("gamma"), Input("beta"), Input("bn_param", "config")),
    params=(
        Param("shape", "shape", (4, 5), "input shape N,D (or N,d1,...,dk)", bench=(100, 3072)),
        Param("filters", "int", 6, "output features M", bench=100, minimum=1),
        Param("mode", "choice", "test", "'train' (batch statistics) or 'test' (running statistics; the default, "
              "as db is identically 0 in train mode)", choices=("train", "test"), option=False),
        Param("eps", "float", 1e-5, "added to the variance before the square root", option=False),
        Param("momentum", "float", 0.9, "weight of the old running statistics in their update",
              minimum=0.0, maximum=1.0),
    ),
    build=build,
    output_shape=affine.output_shape,
    shapes=shapes,
    # Test mode (the default) only: in train mode db is identically 0 (batchnorm subtracts the batch mean, and b
    # with it), so its centred differences are pure rounding noise, which the gradient and reference checks fail.
    geometries=(
        Geometry("default", {}, "x (4, 5), w (5, 6), test mode (the notebook checks this sandwich only inside a "
                                "network; batchnorm's train mode is checked on its own)"),
        Geometry("4d", {"shape": (3, 2, 2, 2), "filters": 4, "eps": 0.1}, "4-D x, a large eps"),
        Geometry("tall", {"shape": (5, 3), "filters": 2}, "N > D > M"),
        Geometry("single", {"shape": (1, 6), "filters": 3}, "N = 1"),
    ),
    reference="numpy",
    state=("running_mean", "running_var"),
    kinks=True,
    flops=affine.flops,
    check=check,
    sweep={"N": dim(0), "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("numpy", "cnncheck.layers.sandwich:affine_bn_relu_forward",
                "cnncheck.layers.sandwich:affine_bn_relu_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:affine_bn_relu_forward",
                "cnncheck.layers.torch_extra:affine_bn_relu_backward", "torch", "torch"),
    ),
)
