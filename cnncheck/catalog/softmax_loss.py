"""Softmax (cross-entropy) loss: ``loss, dx = softmax_loss(x, y)``.

x (N, C) class scores, y (N,) integer labels in [0, C); the loss is
``-mean_i log(softmax(x_i)[y_i])``, a number, and dx has x's shape.  The
check differentiates the loss (dout is 1).  A geometry adds 1000 to every
score: ``exp`` overflows there unless each row is shifted by its maximum
first, which leaves the loss unchanged.
"""

from __future__ import annotations

from cnncheck.catalog._norm import dim
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, C = p["shape"]
    x = (p["offset"] + p["scale"] * rng.standard_normal((N, C))).astype(dtype)
    return Sample({"x": x, "y": rng.integers(0, C, size=N)}, None)


def shapes(p) -> dict:
    N, C = p["shape"]
    return {"x": (N, C), "y": (N,), "out": ()}


def bytes_moved(p, itemsize: int) -> tuple:
    N, C = p["shape"]
    return 2 * N * C * itemsize + N * 8, 0


SPEC = LayerSpec(
    name="softmax_loss",
    title="Softmax loss",
    functions={"": ("softmax_loss", "")},
    inputs=(Input("x"), Input("y", "data")),
    params=(
        Param("shape", "shape", (50, 10), "scores shape N,C (C classes)", bench=(1000, 100), ndim=(2,)),
        Param("scale", "float", 1e-3, "standard deviation of the random scores", minimum=0.0),
        Param("offset", "float", 0.0, "added to every score (exp overflows above about 709 without the max shift)"),
    ),
    build=build,
    output_shape=lambda p: (),
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (50, 10) scores of scale 0.001, 50 labels"),
        Geometry("spread", {"shape": (7, 4), "scale": 2.0}, "scores of scale 2 (confident rows), C = 4"),
        Geometry("single", {"shape": (1, 6), "scale": 1.0}, "N = 1"),
        # Few classes with close scores: every probability is sizeable, so a loss computed as
        # logsumexp(x) - x[y] (each near 1000, their difference rounded to about 1e-13) still checks.
        Geometry("large", {"shape": (4, 3), "scale": 0.5, "offset": 1000.0},
                 "scores near 1000: exp overflows unless each row is shifted by its maximum"),
    ),
    reference="numpy",
    protocol="loss",
    bytes=bytes_moved,
    sweep={"N": dim(0), "C": dim(1)},
    impls=(
        Builtin("numpy", "cnncheck.layers.losses:softmax_loss", "", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:softmax_loss", "", "torch", "torch"),
    ),
)
