"""Affine then ReLU: ``affine_relu_forward(x, w, b)``, the course's sandwich layer.

x (N, d_1, ..., d_k) flattened to (N, D), w (D, M), b (M,); out (N, M) =
``max(0, x @ w + b)``; ``affine_relu_backward(dout, cache)`` returns
(dx, dw, db).  A relu sits inside, so the layer has kinks (``kinks``).
"""

from __future__ import annotations

from cnncheck.catalog import affine
from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import dim, spread
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    s = spread(margin)
    values = {"x": s * randn(rng, p["shape"], dtype), "w": s * randn(rng, (affine.D(p), p["filters"]), dtype),
              "b": s * randn(rng, (p["filters"],), dtype)}
    return Sample(values, randn(rng, affine.output_shape(p), dtype))


SPEC = LayerSpec(
    name="affine_relu",
    title="Affine - ReLU",
    functions={"": ("affine_relu_forward", "affine_relu_backward")},
    inputs=(Input("x"), Input("w"), Input("b")),
    params=(
        Param("shape", "shape", (2, 3, 4), "input shape N,D (or N,d1,...,dk)", bench=(100, 3072)),
        Param("filters", "int", 10, "output features M", bench=100, minimum=1),
    ),
    build=build,
    output_shape=affine.output_shape,
    shapes=affine.shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (2, 3, 4), w (12, 10)"),
        Geometry("2d", {"shape": (5, 7), "filters": 3}, "2-D x, N > M"),
        Geometry("single", {"shape": (1, 6), "filters": 2}, "N = 1"),
        Geometry("5d", {"shape": (3, 2, 1, 2, 2), "filters": 4}, "5-D x"),
    ),
    reference="numpy",
    kinks=True,
    flops=affine.flops,
    check=affine.check,
    sweep={"N": dim(0), "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("numpy", "cnncheck.layers.sandwich:affine_relu_forward",
                "cnncheck.layers.sandwich:affine_relu_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:affine_relu_forward",
                "cnncheck.layers.torch_extra:affine_relu_backward", "torch", "torch"),
    ),
)
