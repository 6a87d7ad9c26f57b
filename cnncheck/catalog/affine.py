"""Affine (fully connected): ``affine_forward(x, w, b)``.

x (N, d_1, ..., d_k) is flattened to (N, D); w (D, M); b (M,); out (N, M).
"""

from __future__ import annotations

import math

from cnncheck.catalog._inputs import randn, shape_dim
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def D(p) -> int:
    return math.prod(p["shape"][1:])


def output_shape(p) -> tuple:
    return (p["shape"][0], p["filters"])


def build(p, rng, dtype, margin, kinks) -> Sample:
    values = {"x": randn(rng, p["shape"], dtype), "w": randn(rng, (D(p), p["filters"]), dtype),
              "b": randn(rng, (p["filters"],), dtype)}
    return Sample(values, randn(rng, output_shape(p), dtype))


def shapes(p) -> dict:
    return {"x": p["shape"], "w": (D(p), p["filters"]), "b": (p["filters"],), "out": output_shape(p)}


def flops(p) -> tuple:
    forward = 2 * p["shape"][0] * D(p) * p["filters"]
    return forward, 2 * forward


def check(p) -> None:
    if len(p["shape"]) < 2:
        raise CnnCheckError(f"affine shape must be N,D (or N,d1,...,dk), got {p['shape']}")


def _features(p, value):
    return {**p, "shape": (p["shape"][0], value)}


SPEC = LayerSpec(
    name="affine",
    title="Affine (fully connected)",
    functions={"": ("affine_forward", "affine_backward")},
    inputs=(Input("x"), Input("w"), Input("b")),
    params=(
        Param("shape", "shape", (4, 32), "input shape N,D (or N,d1,...,dk)", bench=(100, 3072), ndim=None),
        Param("filters", "int", 2, "output features M", bench=100, minimum=1),
    ),
    build=build,
    output_shape=output_shape,
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (4, 32), w (32, 2)"),
        Geometry("4d", {"shape": (2, 3, 4, 5), "filters": 3}, "4-D x, flattened to (2, 60)"),
        Geometry("5d", {"shape": (3, 2, 2, 3, 2), "filters": 4}, "5-D x"),
        Geometry("single", {"shape": (1, 7), "filters": 1}, "N = 1 and M = 1"),
    ),
    reference="numpy",
    flops=flops,
    check=check,
    sweep={"N": shape_dim(0), "D": _features, "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("numpy", "cnncheck.layers.naive:affine_forward", "cnncheck.layers.naive:affine_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_impl:affine_forward", "cnncheck.layers.torch_impl:affine_backward",
                "torch", "torch"),
    ),
)

