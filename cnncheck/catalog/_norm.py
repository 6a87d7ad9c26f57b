"""Input generators and checks shared by the normalisation, dropout, loss and sandwich specs."""

from __future__ import annotations

import math

import numpy as np

from cnncheck.errors import CnnCheckError


def features(rng: np.random.Generator, shape, axis: int, dtype) -> tuple:
    """Inputs as the course notebooks draw them (``5 * randn + 12``), with a mean and a scale per feature.

    Each index along ``axis`` (the feature or channel) gets its own mean
    (12 plus or minus about 3) and standard deviation (between 2 and 6), so
    statistics taken over the wrong axis differ from the right ones by a lot.

    Returns
    -------
    (x, mean, std)
        ``x`` of ``shape`` in ``dtype``; ``mean`` and ``std`` float64 of
        shape ``(shape[axis],)``, the values x was drawn with.
    """
    size = shape[axis]
    mean = 12.0 + 3.0 * rng.standard_normal(size)
    std = rng.uniform(2.0, 6.0, size)
    expand = [1] * len(shape)
    expand[axis] = size
    x = rng.standard_normal(shape) * std.reshape(expand) + mean.reshape(expand)
    return x.astype(dtype), mean, std


def running_stats(rng: np.random.Generator, mean: np.ndarray, std: np.ndarray, dtype) -> tuple:
    """Plausible running statistics, near the true ones but not equal to any batch's."""
    running_mean = mean + 0.5 * std * rng.standard_normal(mean.shape)
    running_var = std ** 2 * rng.uniform(0.5, 1.5, std.shape)
    return running_mean.astype(dtype), running_var.astype(dtype)


def bn_param(p, running_mean: np.ndarray, running_var: np.ndarray) -> dict:
    """The course's ``bn_param`` with every key given (a layer that ignores one is seen to)."""
    return {"mode": p["mode"], "eps": p["eps"], "momentum": p["momentum"],
            "running_mean": running_mean, "running_var": running_var}


def check_eps(p, layer: str) -> None:
    if p["eps"] <= 0:
        raise CnnCheckError(f"{layer} eps must be > 0 (it keeps the division by sqrt(var + eps) finite), "
                            f"got {p['eps']:g}")


def spread(margin: float) -> float:
    """Scale of a sandwich layer's random inputs: 1, or more when the probe step is large (float32).

    A probe moves a relu's input by about ``step`` times the other operand;
    spreading every input by ``s`` makes that a fraction ``1 / s`` as likely
    to cross the kink.  ``margin`` is ten probe steps: 1e-4 in float64 (the
    notebook's N(0, 1) inputs), 0.3 in float32 (inputs 30 times wider).
    """
    return max(1.0, 100.0 * margin)


def dim(index: int):
    """A ``--sweep`` letter that sets size ``index`` of the ``shape`` parameter."""
    def apply(p, value):
        shape = list(p["shape"])
        shape[index] = value
        return {**p, "shape": tuple(shape)}
    return apply


def elementwise_bytes(read: int, write_forward: int = 1, read_backward: int = 2):
    """``bytes`` for a layer that streams whole arrays of ``shape``.

    Forward reads ``read`` arrays and writes ``write_forward``; backward
    reads ``read_backward`` (dout and a cached array) and writes dx.
    """
    def moved(p, itemsize: int) -> tuple:
        n = math.prod(p["shape"]) * itemsize
        return (read + write_forward) * n, (read_backward + 1) * n
    return moved
