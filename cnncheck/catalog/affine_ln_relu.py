"""Affine, layer normalisation, then ReLU: ``affine_ln_relu_forward(x, w, b, gamma, beta, ln_param)``.

x (N, d_1, ..., d_k) flattened to (N, D), w (D, M), b (M,), gamma and beta
(M,); out (N, M).  ``ln_param`` holds ``eps`` (1e-5);
``affine_ln_relu_backward`` returns (dx, dw, db, dgamma, dbeta).  A relu
sits inside, so the layer has kinks.  The course assignment makes this
sandwich optional.
"""

from __future__ import annotations

from cnncheck.catalog import affine
from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import check_eps, dim, spread
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    M, s = p["filters"], spread(margin)
    values = {"x": s * randn(rng, p["shape"], dtype), "w": s * randn(rng, (affine.D(p), M), dtype),
              "b": s * randn(rng, (M,), dtype), "gamma": s * randn(rng, (M,), dtype),
              "beta": s * randn(rng, (M,), dtype), "ln_param": {"eps": p["eps"]}}
    return Sample(values, randn(rng, affine.output_shape(p), dtype))


def shapes(p) -> dict:
    M = p["filters"]
    found = affine.shapes(p)
    found.update({"gamma": (M,), "beta": (M,), "workspace": (4 * p["shape"][0] * M,)})
    return found


def check(p) -> None:
    affine.check(p)
    check_eps(p, "affine_ln_relu")


SPEC = LayerSpec(
    name="affine_ln_relu",
    title="Affine - layer normalisation - ReLU",
    functions={"": ("affine_ln_relu_forward", "affine_ln_relu_backward")},
    inputs=(Input("x"), Input("w"), Input("b"), Input("gamma"), Input("beta"), Input("ln_param", "config")),
    params=(
        Param("shape", "shape", (4, 5), "input shape N,D (or N,d1,...,dk)", bench=(100, 3072)),
        Param("filters", "int", 6, "output features M", bench=100, minimum=1),
        Param("eps", "float", 1e-5, "added to the variance before the square root", option=False),
    ),
    build=build,
    output_shape=affine.output_shape,
    shapes=shapes,
    geometries=(
        Geometry("default", {}, "x (4, 5), w (5, 6) (the notebook checks this sandwich only inside a network)"),
        Geometry("4d", {"shape": (3, 2, 2, 2), "filters": 4, "eps": 0.1}, "4-D x, a large eps"),
        Geometry("single", {"shape": (1, 6), "filters": 5}, "N = 1"),
        Geometry("tall", {"shape": (7, 3), "filters": 4}, "N > M > D"),
    ),
    reference="numpy",
    kinks=True,
    flops=affine.flops,
    check=check,
    sweep={"N": dim(0), "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("numpy", "cnncheck.layers.sandwich:affine_ln_relu_forward",
                "cnncheck.layers.sandwich:affine_ln_relu_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:affine_ln_relu_forward",
                "cnncheck.layers.torch_extra:affine_ln_relu_backward", "torch", "torch"),
    ),
)
