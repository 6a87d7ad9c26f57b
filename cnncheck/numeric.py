"""Centred differences of a forward pass, and the verdict on an analytic gradient.

For an input ``x`` with analytic gradient ``a`` (what backward returned for
the upstream gradient ``dout``)::

    numeric[i] = sum((f(x + h e_i) - f(x - h e_i)) * dout) / (x_i^+ - x_i^-)

where ``x_i^+`` and ``x_i^-`` are the probed values as stored (after rounding
to the input's dtype), and output differences are taken elementwise in
float64.  Points are elements (every one, or a sample that always holds the
corners of the array) or random directions ``d`` with entries +-1, for
which the numerical directional derivative is compared with ``<a, delta>``.

The error of a comparison is the course notebook's ``rel_error``, the largest
``|n - a| / max(floor, |n| + |a|)``, with the floor raised to
:data:`RELATIVE_FLOOR` of the largest ``|n|`` (elements much smaller than the
largest are held to an absolute error: their centred differences are
rounding noise).  Two more things are read off the same probes for free:
one-sided differences (a failing element whose analytic value lies between
them sits on a kink, and is not held against the gradient), and whether the
output changed at all (a forward that ignores an input is the forward's
fault, not the backward's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncheck.status import Status

#: Default (eps, max_error) per dtype (see the README for the measurements).
DEFAULT_TOLERANCES = {"float64": (1e-5, 1e-7), "float32": (3e-2, 1e-2)}

#: The relative error's denominator is never below this fraction of the largest numerical derivative.
RELATIVE_FLOOR = {"float64": 1e-2, "float32": 1e-1}


@dataclass(frozen=True)
class Comparison:
    """Analytic against numerical values of one gradient at some points.

    Attributes
    ----------
    status : Status
        ``pass`` or ``fail``.
    rel_error, abs_error : float
    worst_index : tuple of int or None
        The element with the largest error (None for a direction).
    got, expected : float
        Analytic and numerical values there.
    compared : int
        Points compared.
    message : str
    kinks : int
        Failing points explained by a kink.
    unchanged : bool
        The output did not change at any probe.
    """

    status: Status
    rel_error: float
    abs_error: float
    worst_index: tuple | None
    got: float
    expected: float
    compared: int
    message: str = ""
    kinks: int = 0
    unchanged: bool = False


def sample_indices(shape: tuple, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of ``count`` elements: the array's corners first, then random ones, sorted."""
    size = int(np.prod(shape))
    if count >= size:
        return np.arange(size)
    corners = set()
    for bits in range(2 ** min(len(shape), 10)):
        corner = tuple((dim - 1) if (bits >> k) & 1 else 0 for k, dim in enumerate(shape))
        corners.add(int(np.ravel_multi_index(corner, shape)))
    chosen = sorted(corners)[:count]
    rest = np.setdiff1d(np.arange(size), chosen)
    extra = rng.choice(rest, size=min(len(rest), count - len(chosen)), replace=False)
    return np.sort(np.concatenate([np.array(chosen, dtype=np.int64), extra.astype(np.int64)]))


def compare_elements(x: np.ndarray, analytic: np.ndarray, indices: np.ndarray, plus: np.ndarray,
                     minus: np.ndarray, base: np.ndarray, dout: np.ndarray, *, h: float, threshold: float,
                     floor_fraction: float, kinks: bool, label: str) -> Comparison:
    """Verdict from element probes: ``plus``/``minus`` (points, outputs) float64, ``base`` the unperturbed output."""
    flat = x.reshape(-1)
    at = flat[indices].astype(np.float64)
    plus_at = (flat[indices] + np.asarray(h, dtype=x.dtype)).astype(x.dtype).astype(np.float64)
    minus_at = (flat[indices] - np.asarray(h, dtype=x.dtype)).astype(x.dtype).astype(np.float64)
    d = dout.reshape(-1).astype(np.float64)
    with np.errstate(all="ignore"):
        numeric = ((plus - minus) @ d) / (plus_at - minus_at)
        right = ((plus - base.reshape(-1)) @ d) / (plus_at - at)
        left = ((base.reshape(-1) - minus) @ d) / (at - minus_at)
    a = analytic.reshape(-1)[indices].astype(np.float64)
    unchanged = bool(np.array_equal(plus, minus))
    where = [tuple(int(i) for i in np.unravel_index(int(j), x.shape)) for j in indices]
    return _verdict(a, numeric, right, left, where, threshold=threshold, floor_fraction=floor_fraction,
                    noise=noise_level(base, dout, h, x.dtype),
                    kinks=kinks, label=label, unit="elements", unchanged=unchanged)


def compare_directions(x: np.ndarray, analytic: np.ndarray, directions: np.ndarray, plus: np.ndarray,
                       minus: np.ndarray, base: np.ndarray, dout: np.ndarray, *, h: float, threshold: float,
                       floor_fraction: float, kinks: bool, label: str) -> Comparison:
    """Verdict from directional probes along ``directions`` (points, *x.shape) of +-1."""
    d = dout.reshape(-1).astype(np.float64)
    g = analytic.reshape(-1).astype(np.float64)
    numeric, projected, right, left = [], [], [], []
    base64 = base.reshape(-1).astype(np.float64)
    for k, direction in enumerate(directions):
        step = np.asarray(h, dtype=x.dtype) * direction.reshape(x.shape).astype(x.dtype)
        delta = (x + step).astype(np.float64).reshape(-1) - (x - step).astype(np.float64).reshape(-1)
        with np.errstate(all="ignore"):
            numeric.append(float((plus[k] - minus[k]) @ d) / (2.0 * h))
            projected.append(float(g @ delta) / (2.0 * h))
            right.append(float((plus[k] - base64) @ d) / h)
            left.append(float((base64 - minus[k]) @ d) / h)
    unchanged = bool(np.array_equal(plus, minus))
    return _verdict(np.array(projected), np.array(numeric), np.array(right), np.array(left), None,
                    threshold=threshold, floor_fraction=floor_fraction, noise=noise_level(base, dout, h, x.dtype),
                    kinks=kinks, label=label, unit="directions", unchanged=unchanged)


#: Rounding errors of one output element, in units of the dtype's machine epsilon.
NOISE_ULPS = 10.0


def noise_level(base: np.ndarray, dout: np.ndarray, h: float, dtype) -> float:
    """The absolute error a centred difference of this output cannot resolve.

    Each output element carries a rounding error of about ``NOISE_ULPS``
    machine epsilons of its size; contracted with ``dout`` and divided by the
    step ``2 h``, that is ``NOISE_ULPS * eps * sum(|out| * |dout|) / (2 h)``.
    A gradient element within this of its numerical value is right as far as
    centred differences can tell (a gradient that is exactly zero in theory,
    such as a bias before a batch normalisation, shows only this noise).
    """
    eps = float(np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64).eps)
    scale = float(np.abs(np.asarray(base, dtype=np.float64)).reshape(-1) @
                  np.abs(np.asarray(dout, dtype=np.float64)).reshape(-1))
    return NOISE_ULPS * eps * scale / (2.0 * h)


def errors(a: np.ndarray, n: np.ndarray, floor_fraction: float, noise: float = 0.0,
           threshold: float = 1.0) -> tuple:
    """``(abs_error, rel_error)`` arrays: the denominator is raised to ``floor_fraction`` of the largest
    ``|n|`` and to ``noise / threshold``, so elements within the noise of the centred differences pass."""
    abs_err = np.abs(n - a)
    floor = max(1e-8, floor_fraction * float(np.max(np.abs(n), initial=0.0)), noise / threshold)
    with np.errstate(all="ignore"):
        rel = abs_err / np.maximum(floor, np.abs(a) + np.abs(n))
    return abs_err, rel


def _verdict(a, n, right, left, where, *, threshold, floor_fraction, kinks, label, unit, unchanged,
             noise: float = 0.0) -> Comparison:
    abs_err, rel = errors(a, n, floor_fraction, noise, threshold)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    if rel.size == 0:
        return Comparison(Status.PASS, 0.0, 0.0, None, 0.0, 0.0, 0, f"{label} has no elements")
    worst = int(np.argmax(rel))
    failing = np.flatnonzero(rel > threshold)
    explained = 0
    if kinks and failing.size:
        tol = threshold * (np.abs(right[failing]) + np.abs(left[failing])) + 1e-12
        crossed = np.abs(right[failing] - left[failing]) > tol
        low = np.minimum(right[failing], left[failing]) - tol
        high = np.maximum(right[failing], left[failing]) + tol
        on_kink = crossed & (low <= a[failing]) & (a[failing] <= high)
        explained = int(on_kink.sum())
        real = failing[~on_kink]
        if real.size:
            worst = int(real[np.argmax(rel[real])])
        failing = real
    index = None if where is None else where[worst]
    spot = (f"at {label}{list(index)}" if index is not None else f"along random direction {worst + 1} of {rel.size}")
    kink_note = (f"; {explained} {unit} sit on kinks (one-sided differences disagree and the analytic value lies "
                 f"between them)" if explained else "")
    common = dict(rel_error=float(rel[worst]), abs_error=float(np.max(abs_err)), worst_index=index,
                  got=float(a[worst]), expected=float(n[worst]), compared=int(rel.size), kinks=explained,
                  unchanged=unchanged)
    if not failing.size:
        message = (f"{explained} of {rel.size} {unit} sit on kinks" + kink_note[kink_note.index("(") - 1:]
                   if explained else "")
        if explained:
            common["rel_error"] = float(rel[np.setdiff1d(np.arange(rel.size), np.flatnonzero(rel > threshold))].max(
                initial=0.0))
        return Comparison(Status.PASS, message=message, **common)
    message = (f"{failing.size} of {rel.size} {unit} disagree; worst {spot}: analytic {a[worst]:.6g}, "
               f"numeric {n[worst]:.6g} (rel error {rel[worst]:.3g} > {threshold:g}){kink_note}")
    return Comparison(Status.FAIL, message=message, **common)


def float32_only(values: np.ndarray) -> bool:
    """True when every value of a float64 array is exactly a float32 number (and not all are integers)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return False
    exact = values.astype(np.float32).astype(np.float64) == values
    return bool(exact.all() and not np.all(values == np.round(values)))
