"""Regression logic of --compare on crafted result files."""

from __future__ import annotations

import json

import pytest

from cnncheck.compare import compare_results, load_result, parse_fraction, require_overlap, validate_result
from cnncheck.errors import CnnCheckError
from cnncheck.results import BenchResult
from cnncheck.stats import Stats

PARAMS = {"shape": [2, 3, 8, 8], "pool_height": 2, "pool_width": 2, "stride": 2}


def saved_row(impl, direction, median, speedup=None, params=PARAMS, dtype="float64", sweep_value=None):
    return {"layer": "pool", "direction": direction, "impl": impl, "median": median, "speedup": speedup,
            "params": params, "dtype": dtype, "sweep_value": sweep_value}


def saved(*rows):
    return {"command": "bench", "version": "0.1.0", "machine": {"cpu": "Old CPU"}, "results": list(rows)}


def current(impl, direction, median, speedup=None, params=None, sweep_value=None):
    params = {"shape": (2, 3, 8, 8), "pool_height": 2, "pool_width": 2, "stride": 2} if params is None else params
    return BenchResult("pool", direction, impl, params=params, stats=Stats.from_times([median]),
                       speedup=speedup, sweep_value=sweep_value)


def by_metric(comparisons):
    return {(c.impl, c.direction, c.metric): c for c in comparisons}


def test_median_regression_beyond_the_bound():
    ref = saved(saved_row("fast", "forward", 1.0e-3), saved_row("fast", "backward", 2.0e-3))
    now = [current("fast", "forward", 1.3e-3), current("fast", "backward", 2.2e-3)]
    comparisons, info = compare_results(ref, now, 0.2, source="base.json")
    got = by_metric(comparisons)
    assert got["fast", "forward", "median"].change == pytest.approx(0.3)
    assert got["fast", "forward", "median"].regressed
    assert got["fast", "backward", "median"].change == pytest.approx(0.1)
    assert not got["fast", "backward", "median"].regressed
    assert info == {"file": "base.json", "machine": {"cpu": "Old CPU"}, "matched": 2, "unmatched": 0}


def test_faster_is_a_negative_change():
    comparisons, _ = compare_results(saved(saved_row("fast", "forward", 2e-3)),
                                     [current("fast", "forward", 1e-3)], 0.0)
    (c,) = comparisons
    assert c.change == pytest.approx(-0.5) and not c.regressed


def test_speedup_regression_is_reference_over_current():
    ref = saved(saved_row("fast", "forward", 1e-3, speedup=300.0))
    # same time, but the speedup fell from 300 to 200: 300/200 - 1 = 50 % worse
    comparisons, _ = compare_results(ref, [current("fast", "forward", 1e-3, speedup=200.0)], 0.2)
    got = by_metric(comparisons)
    assert not got["fast", "forward", "median"].regressed
    speed = got["fast", "forward", "speedup"]
    assert speed.reference == 300.0 and speed.current == 200.0
    assert speed.change == pytest.approx(0.5) and speed.regressed


def test_the_bound_itself_is_allowed():
    comparisons, _ = compare_results(saved(saved_row("fast", "forward", 1.0)),
                                     [current("fast", "forward", 1.25)], 0.25)
    assert not comparisons[0].regressed


def test_rows_with_other_parameters_or_dtype_do_not_match():
    other = dict(PARAMS, stride=1)
    ref = saved(saved_row("fast", "forward", 1e-3, params=other), saved_row("fast", "backward", 1e-3, dtype="float32"),
                saved_row("naive", "forward", 1.0))
    comparisons, info = compare_results(ref, [current("fast", "forward", 1e-3), current("fast", "backward", 1e-3),
                                              current("naive", "forward", 1.0)], 0.2)
    assert [(c.impl, c.direction) for c in comparisons] == [("naive", "forward")]
    assert info["matched"] == 1 and info["unmatched"] == 2


def test_nothing_matching_is_an_error():
    ref = saved(saved_row("naive", "forward", 1.0))
    with pytest.raises(CnnCheckError, match="nothing in base.json matches"):
        compare_results(ref, [current("fast", "forward", 1e-3)], 0.2, source="base.json")


def test_sweep_rows_match_on_their_value():
    ref = saved(saved_row("fast", "forward", 1e-3, sweep_value=2), saved_row("fast", "forward", 4e-3, sweep_value=8))
    now = [current("fast", "forward", 1e-3, sweep_value=2), current("fast", "forward", 8e-3, sweep_value=8)]
    comparisons, _ = compare_results(ref, now, 0.2)
    assert [(c.sweep_value, c.regressed) for c in comparisons] == [(2, False), (8, True)]


def test_untimed_rows_are_skipped():
    ref = saved(saved_row("fast", "forward", None))
    comparisons, info = compare_results(ref, [current("fast", "forward", 1e-3)], 0.2)
    assert comparisons == () and info["matched"] == 1


def test_require_overlap():
    ref = saved(saved_row("fast", "forward", 1e-3))
    planned = [{"layer": "pool", "direction": "forward", "impl": "fast", "sweep_value": None,
                "params": {"shape": (2, 3, 8, 8), "pool_height": 2, "pool_width": 2, "stride": 2},
                "dtype": "float64"}]
    require_overlap(ref, planned, source="f.json")  # tuples match saved lists
    planned[0]["dtype"] = "float32"
    with pytest.raises(CnnCheckError, match="nothing in f.json matches"):
        require_overlap(ref, planned, source="f.json")


# -- loading -------------------------------------------------------------------------
def write(tmp_path, text, name="r.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_round_trip(tmp_path):
    data = saved(saved_row("fast", "forward", 1e-3))
    assert load_result(write(tmp_path, json.dumps(data))) == data


@pytest.mark.parametrize("text, fragment", [
    ("not json at all", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"command": "gradcheck", "results": []}', "it is a 'gradcheck' result"),
    ('{"results": []}', 'no "command": "bench"'),
    ('{"command": "bench"}', '"results" must be a list'),
    ('{"command": "bench", "results": [3]}', "results[0] must be an object"),
    ('{"command": "bench", "results": [{"layer": "pool"}]}', "results[0] lacks direction"),
])
def test_load_refuses_what_is_not_a_bench_result(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(CnnCheckError) as info:
        load_result(path)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_load_refuses_non_numeric_median():
    row = saved_row("fast", "forward", "fast")
    with pytest.raises(CnnCheckError, match="numbers or null"):
        validate_result(saved(row))


def test_load_missing_file(tmp_path):
    with pytest.raises(CnnCheckError, match="cannot read"):
        load_result(tmp_path / "absent.json")


@pytest.mark.parametrize("text, value", [("20%", 0.2), ("0.2", 0.2), ("0", 0.0), ("150%", 1.5), (" 5 % ", 0.05)])
def test_parse_fraction(text, value):
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5%", "20", "nan%", ""])
def test_parse_fraction_refuses(text):
    with pytest.raises(CnnCheckError):
        parse_fraction(text)


def test_a_document_the_engine_writes_loads_and_matches_itself():
    from cnncheck.bench import BenchRun
    from cnncheck.results import BenchConfig

    rows = (current("fast", "forward", 1e-3, speedup=10.0), current("fast", "backward", 2e-3))
    document = json.loads(json.dumps(BenchRun(machine={"cpu": "This CPU"}, config=BenchConfig(baseline=None),
                                              results=rows).to_dict()))
    assert document["schema_version"] == 2 and document["interrupted"] is False
    comparisons, info = compare_results(validate_result(document), rows, 0.2)
    assert info["matched"] == 2 and info["unmatched"] == 0
    assert {(c.direction, c.metric) for c in comparisons} == {("forward", "median"), ("forward", "speedup"),
                                                             ("backward", "median")}
    assert not any(c.regressed for c in comparisons) and all(c.change == 0 for c in comparisons)
