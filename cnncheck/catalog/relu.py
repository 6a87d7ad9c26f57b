"""ReLU: ``relu_forward(x)``, elementwise ``max(x, 0)`` of any shape."""

from __future__ import annotations

import math

import numpy as np

from cnncheck.catalog._inputs import away_from_zero, randn, shape_dim, with_zeros
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    x = with_zeros(rng, p["shape"], dtype) if kinks else away_from_zero(rng, p["shape"], dtype, margin)
    return Sample({"x": x}, randn(rng, p["shape"], dtype))


def shapes(p) -> dict:
    return {"x": p["shape"], "out": p["shape"]}


def bytes_moved(p, itemsize: int) -> tuple:
    n = math.prod(p["shape"]) * itemsize
    return 2 * n, 3 * n


def subgradient(sample: Sample, p, grads) -> str | None:
    """dx is dout where x > 0, 0 where x < 0, and between 0 and dout where x is exactly 0."""
    single = np.float32 in (np.asarray(grads[0]).dtype, np.asarray(sample.dout).dtype)
    x = np.asarray(sample.values["x"], dtype=np.float64)
    dout = np.asarray(sample.dout, dtype=np.float64)
    dx = np.asarray(grads[0], dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(dout))))
    tol = (1e-6 if single else 1e-12) * scale
    low = np.where(x > 0, dout, np.where(x < 0, 0.0, np.minimum(0.0, dout)))
    high = np.where(x > 0, dout, np.where(x < 0, 0.0, np.maximum(0.0, dout)))
    bad = (dx < low - tol) | (dx > high + tol)
    if not bad.any():
        return None
    index = tuple(int(k) for k in np.argwhere(bad)[0])
    at = "exactly 0" if x[index] == 0 else f"{x[index]:.6g}"
    return (f"{int(bad.sum())} of {bad.size} elements are not a valid subgradient; at dx{list(index)} x is {at}, "
            f"dout {dout[index]:.6g}, dx {dx[index]:.6g} (at x = 0 any value between 0 and dout is valid)")


SPEC = LayerSpec(
    name="relu",
    title="ReLU",
    functions={"": ("relu_forward", "relu_backward")},
    inputs=(Input("x"),),
    params=(Param("shape", "shape", (1, 1, 2, 2), "input shape (any number of sizes)", bench=(100, 25, 16, 16)),),
    build=build,
    output_shape=lambda p: p["shape"],
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (1, 1, 2, 2)"),
        Geometry("4d", {"shape": (2, 3, 4, 5)}, "a larger 4-D x"),
        Geometry("2d", {"shape": (3, 7)}, "2-D x"),
    ),
    reference="numpy",
    subgradient=subgradient,
    bytes=bytes_moved,
    sweep={"N": shape_dim(0)},
    impls=(
        Builtin("numpy", "cnncheck.layers.naive:relu_forward", "cnncheck.layers.naive:relu_backward", "numpy"),
        Builtin("fast", "cnncheck.layers.fast:relu_forward_fast", "cnncheck.layers.fast:relu_backward_fast", "kernels"),
        Builtin("torch", "cnncheck.layers.torch_impl:relu_forward", "cnncheck.layers.torch_impl:relu_backward",
                "torch", "torch"),
    ),
)
