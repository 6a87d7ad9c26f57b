"""Hold a bench run against a saved one (``--save`` / ``--compare``) and find regressions.

Rows are matched on layer, direction, implementation and sweep value, and
only when the layer parameters and dtype are the same too (times of other
shapes say nothing).  Two figures are compared per matched row:

* the median seconds per call, which is worse when it grows:
  ``change = current / reference - 1``;
* the speedup over the baseline, which is worse when it shrinks:
  ``change = reference / current - 1``.  Speedups survive a change of
  machine better than times do.

A figure regresses when ``change > max_regression`` (0.2 allows 20 % worse).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from cnncheck.errors import CnnCheckError
from cnncheck.results import BenchComparison, BenchResult

_REQUIRED_ROW_KEYS = ("layer", "direction", "impl", "median", "speedup", "params", "dtype")


def parse_fraction(text: str) -> float:
    """A bound such as ``"20%"`` or ``"0.2"`` as a fraction (0.2).

    Raises
    ------
    CnnCheckError
        Not a number, negative, or a bare number of 1 or more (write ``150%``
        to mean 1.5).
    """
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise CnnCheckError(f"expected a percentage such as 20% or a fraction such as 0.2, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CnnCheckError(f"expected a non-negative percentage such as 20%, got {text!r}")
    if percent:
        return value / 100.0
    if value >= 1:
        raise CnnCheckError(f"ambiguous bound {text!r}: write {value:g}% for a percentage or a fraction below 1")
    return value


def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def validate_result(data, source: str = "the file") -> dict:
    """Check that ``data`` is a saved cnncheck bench result; return it.

    Raises
    ------
    CnnCheckError
        Naming what is missing or wrong.
    """
    def refuse(why: str):
        return CnnCheckError(f"{source} is not a cnncheck bench result: {why}")

    if not isinstance(data, dict):
        raise refuse(f"expected a JSON object, got {type(data).__name__}")
    if data.get("command") != "bench":
        got = data.get("command")
        raise refuse("no \"command\": \"bench\"" + (f" (it is a {got!r} result)" if isinstance(got, str) else ""))
    results = data.get("results")
    if not isinstance(results, list):
        raise refuse("\"results\" must be a list")
    for i, row in enumerate(results):
        if not isinstance(row, dict):
            raise refuse(f"results[{i}] must be an object")
        missing = [k for k in _REQUIRED_ROW_KEYS if k not in row]
        if missing:
            raise refuse(f"results[{i}] lacks {', '.join(missing)}")
        if not _number_or_none(row["median"]) or not _number_or_none(row["speedup"]):
            raise refuse(f"results[{i}] median and speedup must be numbers or null")
    return data


def load_result(path: str | os.PathLike) -> dict:
    """Read and validate a result saved with ``--save`` (or ``--format json``).

    Raises
    ------
    CnnCheckError
        The file cannot be read, is not JSON, or is not a bench result.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise CnnCheckError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CnnCheckError(f"{os.fspath(path)} is not a cnncheck bench result: not JSON ({exc.msg}, "
                            f"line {exc.lineno})") from None
    return validate_result(data, os.fspath(path))


def require_overlap(reference: dict, planned: Sequence[dict], *, source: str = "") -> None:
    """Refuse, before timing anything, a saved result that shares no row with the planned run.

    Parameters
    ----------
    reference : dict
        A validated saved result.
    planned : sequence of dict
        ``layer``, ``direction``, ``impl``, ``sweep_value``, ``params`` and
        ``dtype`` of each row the run will produce.

    Raises
    ------
    CnnCheckError
    """
    saved = {_row_key(row) for row in reference["results"]}
    if planned and not any(_row_key(row) in saved for row in planned):
        raise CnnCheckError(_NO_MATCH.format(source=source or "the saved result"))


_NO_MATCH = ("nothing in {source} matches this run: compare the same layers, implementations, "
             "parameters and --dtype it was saved with")


def _row_key(row: dict) -> tuple:
    """Match key of a row: identity plus the parameters (tuples and lists alike) and dtype."""
    return (row["layer"], row["direction"], row["impl"], row.get("sweep_value"),
            json.dumps(row["params"], sort_keys=True), row["dtype"])


def _change(metric: str, reference: float, current: float) -> float:
    if metric == "median":
        return current / reference - 1.0
    return reference / current - 1.0


def compare_results(reference: dict, results: Sequence[BenchResult], max_regression: float,
                    *, source: str = "") -> tuple[tuple[BenchComparison, ...], dict]:
    """Compare this run's rows with a saved result.

    Parameters
    ----------
    reference : dict
        A validated saved result (see :func:`load_result`).
    results : sequence of BenchResult
        This run's rows.
    max_regression : float
        Largest allowed ``change`` (0.2 is 20 % worse).
    source : str
        The file name, recorded in the returned info.

    Returns
    -------
    comparisons : tuple of BenchComparison
        A ``median`` comparison for every matched row both runs timed, and a
        ``speedup`` one where both have a speedup.
    info : dict
        ``file``, ``machine`` (the saved run's facts), ``matched`` and
        ``unmatched`` (rows of this run with no saved counterpart).

    Raises
    ------
    CnnCheckError
        No row of this run matches the saved result (other layers, shapes or dtype).
    """
    if max_regression < 0:
        raise CnnCheckError(f"max_regression must be >= 0, got {max_regression}")
    saved = {_row_key(row): row for row in reference["results"]}
    comparisons: list[BenchComparison] = []
    matched = unmatched = 0
    for result in results:
        old = saved.get(_row_key(result.to_dict()))
        if old is None:
            unmatched += 1
            continue
        matched += 1
        pairs = (("median", old["median"], result.median), ("speedup", old["speedup"], result.speedup))
        for metric, ref, cur in pairs:
            if ref is None or cur is None or ref <= 0 or cur <= 0:
                continue
            change = _change(metric, ref, cur)
            comparisons.append(BenchComparison(
                layer=result.layer, direction=result.direction, impl=result.impl,
                sweep_value=result.sweep_value, metric=metric, reference=float(ref), current=float(cur),
                change=change, max_regression=max_regression, regressed=change > max_regression,
            ))
    if results and not matched:
        raise CnnCheckError(_NO_MATCH.format(source=source or "the saved result"))
    info = {"file": source, "machine": reference.get("machine"), "matched": matched, "unmatched": unmatched}
    return tuple(comparisons), info
