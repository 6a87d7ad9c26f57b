"""Input generators and parameter helpers shared by the built-in specs."""

from __future__ import annotations

import numpy as np


def randn(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Standard normal samples of ``shape`` in ``dtype``."""
    return rng.standard_normal(shape).astype(dtype, copy=False)


def away_from_zero(rng: np.random.Generator, shape, dtype, margin: float) -> np.ndarray:
    """Normal samples pushed ``margin`` away from 0 (relu's kink)."""
    x = rng.standard_normal(shape)
    x = np.where(x >= 0, x + margin, x - margin)
    return x.astype(dtype)


def with_zeros(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Normal samples with about a third of the elements exactly 0."""
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 1 / 3] = 0.0
    return x.astype(dtype)


def tied(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Values after a relu, on a coarse grid: most windows hold exact ties (zeros, repeats)."""
    x = np.round(rng.standard_normal(shape) * 2.0) / 2.0
    return np.maximum(x, 0.0).astype(dtype)


def distinct_in_windows(rng: np.random.Generator, shape, ph: int, pw: int, dtype, margin: float) -> np.ndarray:
    """Values whose elements differ by at least ``2 * margin`` within any ``ph`` x ``pw`` window.

    Every element gets a colour ``(row % ph) * pw + col % pw``, distinct
    within any window (however windows overlap); its value is
    ``step * (A * K + colour + U)`` with ``K`` colours, ``A`` a random integer
    below 8 and ``U`` uniform in [0, 0.5), so each window's maximum is at a
    random place and ties are at least ``step / 2 >= 2 * margin`` away.
    With ``margin == 0`` plain normal samples are returned.
    """
    if margin <= 0:
        return randn(rng, shape, dtype)
    K, levels = ph * pw, 8
    step = max(4.0 * margin, 2.0 / (levels * K))
    H, W = shape[-2], shape[-1]
    colour = (np.arange(H)[:, None] % ph) * pw + np.arange(W)[None, :] % pw
    value = rng.integers(0, levels, size=shape) * K + colour + 0.5 * rng.random(shape)
    return (step * (value - levels * K / 2.0)).astype(dtype)


def shape_dim(index: int):
    """A ``--sweep`` setter: ``params`` with size ``index`` of ``shape`` set to the swept value."""
    def apply(params, value):
        shape = list(params["shape"])
        shape[index] = value
        return {**params, "shape": tuple(shape)}
    return apply
