"""Inverted dropout: ``dropout_forward(x, dropout_param)``.

x of any shape; out of x's shape.  ``dropout_param`` holds ``p``, the
probability of *keeping* a unit, ``mode`` and ``seed``.  In train mode each
unit is kept with probability p and the kept ones are scaled by 1/p
(``out = x * mask / p``); in test mode the layer is the identity.  The check
always sets the seed, so every call (centred differences included) sees one
mask.

The mask is random, so implementations are not compared with a reference
value by value (a student may draw it with ``np.random.rand(*x.shape) < p``,
``np.random.binomial`` or a Generator, and all are right).  Instead the
check judges the law of the layer from the gradient at the ``subgradient``
step: in train mode ``dx / dout`` must be 0 (dropped) or 1/p (kept) at every
unit, with about p of the units kept; in test mode dx must equal dout.
Since the gradient check ties backward to forward, this judges the forward
pass too.
"""

from __future__ import annotations

import math

import numpy as np

from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import dim, elementwise_bytes
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample

#: Kept units may stray this many binomial standard deviations (plus one unit) from p * units.
KEPT_SIGMAS = 5.0


def build(p, rng, dtype, margin, kinks) -> Sample:
    x = (rng.standard_normal(p["shape"]) + 10.0).astype(dtype)
    param = {"mode": p["mode"], "p": p["p"], "seed": p["seed"]}
    return Sample({"x": x, "dropout_param": param}, randn(rng, p["shape"], dtype))


def shapes(p) -> dict:
    return {"x": p["shape"], "out": p["shape"], "workspace": p["shape"]}


def check(p) -> None:
    if not 0.0 < p["p"] <= 1.0:
        raise CnnCheckError(f"dropout p is the probability of keeping a unit and must be in (0, 1], got {p['p']:g}")
    if p["seed"] is None:
        raise CnnCheckError("dropout seed must be set: the check needs the same mask at every call")


def _index(flat: int, shape) -> list:
    return [int(i) for i in np.unravel_index(flat, shape)]


def law(sample: Sample, p, grads) -> str | None:
    """Test mode: dx equals dout.  Train mode: dx / dout is 0 or 1/p everywhere, with about p of the units kept."""
    dout = np.asarray(sample.dout, dtype=np.float64)
    dx = np.asarray(grads[0], dtype=np.float64)
    single = sample.dout.dtype == np.float32 or grads[0].dtype == np.float32
    tol = 1e-5 if single else 1e-9
    if p["mode"] == "test":
        bad = np.abs(dx - dout) > tol * np.maximum(1.0, np.abs(dout))
        if not bad.any():
            return None
        k = int(np.flatnonzero(bad.reshape(-1))[0])
        return (f"in test mode dropout is the identity, so dx must equal dout; at dx{_index(k, dx.shape)} dx is "
                f"{dx.reshape(-1)[k]:.6g} and dout {dout.reshape(-1)[k]:.6g} (test mode keeps every unit and "
                f"scales nothing: the 1/p scaling happens at train time only)")
    keep = 1.0 / p["p"]
    usable = np.abs(dout) > 1e-3
    ratio = np.where(usable, dx / np.where(usable, dout, 1.0), 0.0)
    kept = usable & (np.abs(ratio - keep) <= tol * keep * 10)
    dropped = usable & (np.abs(ratio) <= tol * 10)
    other = usable & ~kept & ~dropped
    if other.any():
        k = int(np.flatnonzero(other.reshape(-1))[0])
        live = ratio[usable & ~dropped]
        if live.size and np.allclose(live, 1.0, rtol=1e-3):
            return (f"kept units have dx = dout where inverted dropout gives dx = dout / p = {keep:g} * dout: "
                    "the kept units are scaled by 1/p in the forward pass and so in the backward pass too")
        if live.size and p["p"] < 1.0 and np.allclose(live, 1.0 / (1.0 - p["p"]), rtol=1e-3):
            return (f"kept units are scaled by 1/(1 - p) = {1.0 / (1.0 - p['p']):g} instead of 1/p = {keep:g}: "
                    "p is the probability of keeping a unit, not of dropping it (np.random.rand(*x.shape) < p "
                    "keeps a unit)")
        return (f"dx / dout must be 0 (a dropped unit) or 1/p = {keep:g} (a kept unit); at dx{_index(k, dx.shape)} "
                f"it is {ratio.reshape(-1)[k]:.6g}")
    n = int(usable.sum())
    k = int(kept.sum())
    spread = KEPT_SIGMAS * math.sqrt(n * p["p"] * (1.0 - p["p"])) + 1.0
    if abs(k - p["p"] * n) <= spread:
        return None
    message = (f"{k} of {n} units are kept ({k / n:.0%}) where p = {p['p']:g} is the probability of keeping a "
               f"unit (about {p['p'] * n:.0f} expected)")
    if abs(k - (1.0 - p["p"]) * n) <= spread:
        message += ": the mask drops units with probability p instead of keeping them (np.random.rand(*x.shape) < p " \
                   "keeps a unit)"
    return message


SPEC = LayerSpec(
    name="dropout",
    title="Dropout (inverted)",
    functions={"": ("dropout_forward", "dropout_backward")},
    inputs=(Input("x"), Input("dropout_param", "config")),
    params=(
        Param("shape", "shape", (10, 10), "input shape (any number of sizes)", bench=(500, 500)),
        Param("p", "float", 0.2, "probability of keeping a unit, in (0, 1]", maximum=1.0, option=False),
        Param("mode", "choice", "train", "'train' (drop and scale by 1/p) or 'test' (the identity)",
              choices=("train", "test"), option=False),
        Param("seed", "seed", 123, "dropout_param's seed, so every call draws the same mask", minimum=0,
              maximum=2 ** 32 - 1, option=False),
    ),
    build=build,
    output_shape=lambda p: p["shape"],
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (10, 10), p 0.2, train mode, seed 123"),
        Geometry("4d", {"shape": (2, 5, 10, 20), "p": 0.4}, "4-D x of 2000 units, p 0.4"),
        Geometry("row", {"shape": (1, 600), "p": 0.7}, "N = 1, p 0.7"),
        Geometry("test", {"shape": (3, 7), "p": 0.25, "mode": "test"}, "test mode: the identity"),
    ),
    reference=None,
    subgradient=law,
    rule="mask",
    rule_note="every unit is dropped or kept and scaled by 1/p, about p of them kept",
    bytes=elementwise_bytes(1),
    check=check,
    sweep={"N": dim(0)},
    impls=(
        Builtin("numpy", "cnncheck.layers.dropout:dropout_forward", "cnncheck.layers.dropout:dropout_backward",
                "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:dropout_forward", "cnncheck.layers.torch_extra:dropout_backward",
                "torch", "torch"),
    ),
)
