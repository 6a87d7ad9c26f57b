"""``--sweep PARAM=V1,V2,...``: time a layer across values of one parameter and fit how cost grows.

A sweep names a dimension letter of the layer's spec (``spec.sweep``: ``N``,
``C``, ``H``, ``W`` of conv and pool, ``D`` of affine, ``F`` filters, ``K``
a square kernel or window) or one of its integer parameters (``stride``,
``pad``, ``filters``, ``kernel``, ``pool_height``...), and a list of
integer values.  :func:`apply_value` sets one value in a layer's resolved
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
from cnncheck.specs import LayerSpec

#: Parameter kinds a sweep may set directly (a kernel value K means K x K).
_SWEPT_KINDS = ("int", "kernel")


@dataclass(frozen=True)
class Sweep:
    """A parsed ``--sweep``: the parameter and its values, in the order given.

    Attributes
    ----------
    param : str
        A dimension letter or a parameter name (see :func:`sweep_names`).
    values : tuple of int
    """

    param: str
    values: tuple

    def __str__(self) -> str:
        return f"{self.param}={','.join(map(str, self.values))}"


def sweep_names(spec: LayerSpec) -> tuple:
    """What ``--sweep`` accepts for ``spec``: its dimension letters, then its integer parameters."""
    params = tuple(p.name for p in spec.params if p.kind in _SWEPT_KINDS)
    return tuple(spec.sweep) + tuple(p for p in params if p not in spec.sweep)


def parse_sweep(text: str) -> Sweep:
    """Parse ``PARAM=V1,V2,...`` (whether a layer takes ``PARAM`` is checked when the run is planned).

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
        Missing ``=``, a name that is not an identifier, no values, a value
        that is not an integer, or a repeated value.
    """
    name, sep, rest = str(text).partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise CnnCheckError(f"expected PARAM=V1,V2,... (e.g. N=1,2,4,8), got {text!r}")
    if not name.isidentifier():
        raise CnnCheckError(f"unknown parameter {name!r}: give a dimension letter (N, C, H, W...) or a layer "
                            "parameter (stride, pad...)")
    parts = [p.strip() for p in rest.split(",")]
    if not rest.strip() or any(not p for p in parts):
        raise CnnCheckError(f"{name}: give comma-separated integers after '=', got {rest!r}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise CnnCheckError(f"{name}: values must be integers, got {rest!r}") from None
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise CnnCheckError(f"{name}: value {repeated[0]} is given twice")
    return Sweep(name, values)


def apply_value(spec: LayerSpec, params: Mapping[str, Any], param: str, value: int) -> dict:
    """``params`` with the swept ``param`` set to ``value``, validated by the spec.

    Parameters
    ----------
    spec : LayerSpec
    params : mapping
        Resolved bench parameters of ``spec`` (see :meth:`LayerSpec.resolve`).
    param : str
        One of :func:`sweep_names` of ``spec``: a letter of ``spec.sweep``,
        or an integer parameter (a ``kernel`` value K sets K x K).
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
    if param in spec.sweep:
        new = dict(spec.sweep[param](dict(params), value))
    elif param in sweep_names(spec):
        new = {**params, param: (value, value) if spec.param(param).kind == "kernel" else value}
    else:
        raise CnnCheckError(f"--sweep {param} does not apply to {spec.name}; it takes {', '.join(sweep_names(spec))}")
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
