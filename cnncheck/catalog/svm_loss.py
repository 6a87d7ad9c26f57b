"""Multiclass SVM (hinge) loss: ``loss, dx = svm_loss(x, y)``.

x (N, C) class scores, y (N,) integer labels in [0, C); the loss is
``mean_i sum_{j != y_i} max(0, x_ij - x_iy_i + 1)`` (margin 1), a number,
and dx has x's shape.  The check differentiates the loss (dout is 1) on
scores whose margins ``x_ij - x_iy_i + 1`` stay away from 0, where the loss
has kinks; the subgradient step then puts margins exactly at 0 and accepts
any valid subgradient there.
"""

from __future__ import annotations

import numpy as np

from cnncheck.catalog._norm import dim
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def _margins(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x - x[np.arange(len(y)), y][:, None] + 1.0


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, C = p["shape"]
    y = rng.integers(0, C, size=N)
    if kinks:   # scores 0, 1 or 2: about a fifth of the margins are exactly 0
        x = rng.integers(0, 3, size=(N, C)).astype(dtype)
        return Sample({"x": x, "y": y}, None)
    x = p["scale"] * rng.standard_normal((N, C))
    if margin > 0:   # move each score whose margin is within `margin` of 0 (never the label's own score)
        m = _margins(x, y)
        near = np.abs(m) < 2 * margin
        near[np.arange(N), y] = False
        x = np.where(near, x + np.where(m >= 0, 2 * margin, -2 * margin), x)
    return Sample({"x": x.astype(dtype), "y": y}, None)


def shapes(p) -> dict:
    N, C = p["shape"]
    return {"x": (N, C), "y": (N,), "out": ()}


def bytes_moved(p, itemsize: int) -> tuple:
    N, C = p["shape"]
    return 2 * N * C * itemsize + N * 8, 0


def subgradient(sample: Sample, p, grads) -> str | None:
    """Each margin adds 0 to 1/N to dx[i, j] (1/N when positive, 0 when negative); dx[i, y_i] takes it back."""
    x = np.asarray(sample.values["x"], dtype=np.float64)
    y = np.asarray(sample.values["y"])
    dx = np.asarray(grads[0], dtype=np.float64)
    N = x.shape[0]
    rows = np.arange(N)
    tol = 1e-5 if grads[0].dtype == np.float32 else 1e-9
    share = dx * N
    m = _margins(x, y)
    others = np.ones(x.shape, dtype=bool)
    others[rows, y] = False
    low = np.where(m > 0, 1.0, 0.0)
    high = np.where(m < 0, 0.0, 1.0)
    bad = others & ((share < low - tol) | (share > high + tol))
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        kind = "exactly 0" if m[i, j] == 0 else f"{m[i, j]:.6g}"
        return (f"dx[{i}, {j}] is {dx[i, j]:.6g} where the margin x[{i}, {j}] - x[{i}, y[{i}]] + 1 is {kind}: a "
                f"positive margin adds 1/N = {1 / N:.6g} to dx[i, j], a negative one nothing, and one exactly at 0 "
                f"anything between")
    taken = -np.where(others, dx, 0.0).sum(axis=1)
    wrong = np.abs(dx[rows, y] - taken) > tol * max(1.0, float(np.abs(taken).max(initial=0.0)))
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        return (f"dx[{i}, y[{i}]] is {dx[i, y[i]]:.6g} but the other classes of row {i} received {-taken[i]:.6g} "
                f"in total: the label's score loses what the other scores gain")
    return None


SPEC = LayerSpec(
    name="svm_loss",
    title="SVM loss",
    functions={"": ("svm_loss", "")},
    inputs=(Input("x"), Input("y", "data")),
    params=(
        Param("shape", "shape", (50, 10), "scores shape N,C (C classes)", bench=(1000, 100), ndim=(2,)),
        Param("scale", "float", 1e-3, "standard deviation of the random scores", minimum=0.0),
    ),
    build=build,
    output_shape=lambda p: (),
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (50, 10) scores of scale 0.001 (every margin "
                                 "near 1), 50 labels"),
        Geometry("spread", {"shape": (8, 5), "scale": 1.5}, "scores of scale 1.5: positive and negative margins"),
        Geometry("single", {"shape": (1, 4), "scale": 1.0}, "N = 1"),
        Geometry("wide", {"shape": (3, 12), "scale": 0.5}, "C = 12 > N"),
    ),
    reference="numpy",
    protocol="loss",
    subgradient=subgradient,
    bytes=bytes_moved,
    sweep={"N": dim(0), "C": dim(1)},
    impls=(
        Builtin("numpy", "cnncheck.layers.losses:svm_loss", "", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:svm_loss", "", "torch", "torch"),
    ),
)
