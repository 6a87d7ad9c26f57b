"""``--sweep PARAM=V1,V2,...``: time a layer across values of one parameter and fit how cost grows.

A sweep names a dimension letter (:data:`cnncheck.specs.DIMENSIONS`: ``N``,
``C``, ``H``, ``W``, ``D``, ``F``, ``K``) or a layer parameter (``stride``,
``pad``, ``filters``, ``kernel``, ``pool_height``, ``pool_width``) and a list
of integer values.  :func:`apply_value` sets one value in a layer's resolved
parameters; :func:`fit_sweep` fits, per implementation and direction, the
exponent ``k`` in ``time ~ work**k`` by least squares on log-log axes.  Work
is the spec's flop count (conv, affine) or bytes moved (pool, relu); a layer
that counts neither is fitted against the parameter value itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnncheck.errors import CnnCheckError
from cnncheck.results import BenchResult, SweepFit
from cnncheck.specs import DIMENSIONS, LayerSpec

#: Layer parameters a sweep may name directly, besides the dimension letters.
PARAMETER_NAMES: dict[str, str] = {
    "stride": "stride of the convolution or pooling window",
    "pad": "zero padding (conv)",
    "filters": "filters F (conv) or output features M (affine)",
    "kernel": "square kernel size K (conv)",
    "pool_height": "pooling window height",
    "pool_width": "pooling window width",
}

#: Every name ``--sweep`` accepts, with what it changes.
SWEEPABLE: dict[str, str] = {**DIMENSIONS, **PARAMETER_NAMES}

# Position of a dimension letter in a 4-D (N, C, H, W) shape.
_NCHW = {"C": 1, "H": 2, "W": 3}


@dataclass(frozen=True)
class Sweep:
    """A parsed ``--sweep``: the parameter and its values, in the order given.

    Attributes
    ----------
    param : str
        A key of :data:`SWEEPABLE`.
    values : tuple of int
    """

    param: str
    values: tuple

    def __str__(self) -> str:
        return f"{self.param}={','.join(map(str, self.values))}"


def parse_sweep(text: str) -> Sweep:
    """Parse ``PARAM=V1,V2,...``.

    Parameters
    ----------
    text : str
        e.g. ``"N=1,2,4,8"`` or ``"stride=1,2"``.  Dimension letters are
        upper case, parameter names lower case.

    Returns
    -------
    Sweep

    Raises
    ------
    CnnCheckError
        Missing ``=``, an unknown parameter, no values, a value that is not an
        integer, a repeated value, or one out of range (``pad`` >= 0, others >= 1).
    """
    name, sep, rest = str(text).partition("=")
    name = name.strip()
    if not sep or not name:
        raise CnnCheckError(f"--sweep must look like PARAM=V1,V2,... (e.g. N=1,2,4,8), got {text!r}")
    if name not in SWEEPABLE:
        raise CnnCheckError(f"--sweep: unknown parameter {name!r}; known: {', '.join(SWEEPABLE)}")
    parts = [p.strip() for p in rest.split(",")]
    if not rest.strip() or any(not p for p in parts):
        raise CnnCheckError(f"--sweep {name}: give comma-separated integers after '=', got {rest!r}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise CnnCheckError(f"--sweep {name}: values must be integers, got {rest!r}") from None
    least = 0 if name == "pad" else 1
    low = [v for v in values if v < least]
    if low:
        raise CnnCheckError(f"--sweep {name}: values must be >= {least}, got {low[0]}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise CnnCheckError(f"--sweep {name}: value {repeated[0]} is given twice")
    return Sweep(name, values)


def apply_value(spec: LayerSpec, params: Mapping[str, Any], param: str, value: int) -> dict:
    """``params`` with the swept ``param`` set to ``value``, validated by the spec.

    Parameters
    ----------
    spec : LayerSpec
    params : mapping
        Resolved parameters of ``spec`` (see :meth:`LayerSpec.resolve`).
    param : str
        A key of :data:`SWEEPABLE`.  ``N`` sets the batch size; ``C``, ``H``,
        ``W`` need a 4-D shape (N, C, H, W); ``D`` a 2-D shape (N, D); ``F`` is
        ``filters``; ``K`` sets a square kernel (conv) or pooling window (pool).
    value : int

    Returns
    -------
    dict
        Resolved parameters.

    Raises
    ------
    CnnCheckError
        The layer has no such parameter, or the value makes its geometry invalid.
    """
    new = dict(params)
    shape = tuple(new.get("shape", ()))

    def refuse(why: str):
        return CnnCheckError(f"--sweep {param} does not apply to {spec.name}: {why}")

    if param == "N":
        if not shape:
            raise refuse("it has no input shape")
        new["shape"] = (value, *shape[1:])
    elif param in _NCHW:
        if len(shape) != 4:
            raise refuse(f"{param} needs a 4-D input shape N,C,H,W, and its shape is {shape}")
        dims = list(shape)
        dims[_NCHW[param]] = value
        new["shape"] = tuple(dims)
    elif param == "D":
        if len(shape) != 2:
            raise refuse(f"D needs a 2-D input shape N,D, and its shape is {shape}")
        new["shape"] = (shape[0], value)
    elif param in ("F", "filters"):
        if "filters" not in spec.params:
            raise refuse("it has no filters")
        new["filters"] = value
    elif param in ("K", "kernel"):
        if "kernel" in spec.params:
            new["kernel"] = (value, value)
        elif param == "K" and "pool_height" in spec.params and "pool_width" in spec.params:
            new["pool_height"] = new["pool_width"] = value
        else:
            raise refuse("it has no kernel")
    else:
        if param not in spec.params:
            raise refuse(f"it takes {', '.join(spec.params)}")
        new[param] = value
    try:
        return spec.resolve(new, purpose="bench")
    except CnnCheckError as exc:
        raise CnnCheckError(f"--sweep {param}={value} for {spec.name}: {exc}") from None


def fit_exponent(work: Sequence[float], times: Sequence[float]) -> float | None:
    """Least-squares slope of ``log(times)`` against ``log(work)``.

    Parameters
    ----------
    work, times : sequence of float
        Pairs with both positive are used; others are ignored.

    Returns
    -------
    float or None
        The exponent ``k`` of ``time ~ work**k``; None with fewer than two
        distinct work values.
    """
    points = [(math.log(w), math.log(t)) for w, t in zip(work, times)
              if w is not None and t is not None and w > 0 and t > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def _work(result: BenchResult) -> tuple[float, str]:
    if result.flops is not None:
        return float(result.flops), "flop"
    if result.bytes is not None:
        return float(result.bytes), "byte"
    return float(result.sweep_value), "value"


def fit_sweep(results: Iterable[BenchResult], param: str) -> tuple[SweepFit, ...]:
    """One :class:`SweepFit` per layer, direction and implementation of a sweep's rows.

    Parameters
    ----------
    results : iterable of BenchResult
        Rows with ``sweep_value`` set, in run order.
    param : str
        The swept parameter.

    Returns
    -------
    tuple of SweepFit
        In order of first appearance.
    """
    groups: dict[tuple, list[BenchResult]] = {}
    for result in results:
        if result.sweep_value is None:
            continue
        groups.setdefault((result.layer, result.direction, result.impl), []).append(result)
    fits = []
    for (layer, direction, impl), rows in groups.items():
        works = [_work(r) for r in rows]
        units = {unit for _, unit in works}
        if len(units) > 1:
            works = [(float(r.sweep_value), "value") for r in rows]
        work = tuple(w for w, _ in works)
        medians = tuple(r.median for r in rows)
        fits.append(SweepFit(
            layer=layer,
            direction=direction,
            impl=impl,
            param=param,
            values=tuple(r.sweep_value for r in rows),
            work=work,
            work_unit=works[0][1],
            medians=medians,
            exponent=fit_exponent(work, medians),
        ))
    return tuple(fits)
