"""The bench harness on a fake clock: calibration, stopping rules, budgets, rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncheck import bench
from cnncheck.bench import BenchCase, measure, plan_cases, run_bench
from cnncheck.catalog import AFFINE, CONV, POOL, RELU
from cnncheck.errors import CnnCheckError
from cnncheck.layers import naive
from cnncheck.results import BenchConfig, BenchStatus
from cnncheck.specs import Impl


class FakeClock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def costing(clock: FakeClock, costs):
    """fn() that advances the clock by costs[i] on its i-th call (the last cost repeats); returns i+1."""
    costs = list(costs) if isinstance(costs, (list, tuple)) else [costs]
    calls = []

    def fn():
        clock.advance(costs[min(len(calls), len(costs) - 1)])
        calls.append(None)
        return len(calls)

    fn.calls = calls
    return fn


# -- measure --------------------------------------------------------------------
def test_slow_calls_run_one_per_round_until_min_time():
    clock = FakeClock()
    fn = costing(clock, 0.125)
    m = measure(fn, repeat=3, min_time=0.625, clock=clock)
    # warm-up 0.125 s >= round time: loops 1; 3 runs give 0.375 s < 0.625, so 5 runs
    assert m.loops == 1
    assert len(m.times) == 5
    assert m.times == pytest.approx((0.125,) * 5)
    assert not m.limited
    assert m.value == 1  # what the warm-up call returned
    assert len(fn.calls) == 6
    assert m.warmup == pytest.approx(0.125)
    assert m.elapsed == pytest.approx(0.75)


def test_repeat_wins_when_min_time_is_reached_early():
    clock = FakeClock()
    m = measure(costing(clock, 0.4), repeat=4, min_time=0.5, clock=clock)
    assert len(m.times) == 4


def test_fast_calls_are_grouped_to_reach_the_round_time():
    clock = FakeClock()
    fn = costing(clock, 1e-4)
    m = measure(fn, repeat=3, min_time=0.0, clock=clock, round_time=1e-3)
    assert m.loops == 10
    assert m.times == pytest.approx((1e-4,) * 3)
    # warm-up, one calibration round of 10, three runs of 10
    assert len(fn.calls) == 1 + 10 + 30


def test_calibration_corrects_a_slow_cold_call():
    clock = FakeClock()
    fn = costing(clock, [5e-4, 1e-5])
    m = measure(fn, repeat=2, min_time=0.0, clock=clock, round_time=1e-3)
    # cold call predicts 2 loops; they take 2e-5 s, so the count grows to 1e-3 / 1e-5 = 100
    assert m.loops == 100
    assert m.times == pytest.approx((1e-5, 1e-5))


def test_median_of_uneven_runs():
    clock = FakeClock()
    m = measure(costing(clock, [0.2, 0.1, 0.3, 0.2]), repeat=3, min_time=0.0, clock=clock)
    assert m.times == pytest.approx((0.1, 0.3, 0.2))
    assert m.stats.median == pytest.approx(0.2)
    assert m.stats.iqr == pytest.approx(0.1)


def test_budget_stops_a_slow_measurement_and_marks_it():
    clock = FakeClock()
    fn = costing(clock, 3.0)
    m = measure(fn, repeat=5, min_time=0.5, max_seconds=10.0, clock=clock)
    # the warm-up is not counted; runs end at 3, 6 and 9 s of budget; a fourth would end at 12 s > 10
    assert m.times == pytest.approx((3.0, 3.0, 3.0))
    assert m.limited
    assert len(fn.calls) == 4
    assert m.elapsed == pytest.approx(12.0)


def test_a_call_longer_than_the_budget_is_timed_once():
    clock = FakeClock()
    fn = costing(clock, 12.0)
    m = measure(fn, repeat=5, min_time=0.5, max_seconds=10.0, clock=clock)
    assert m.times == pytest.approx((12.0,))
    assert m.limited and m.loops == 1
    assert len(fn.calls) == 2  # warm-up and one timed run


def test_a_slow_first_call_does_not_spend_the_budget():
    clock = FakeClock()
    # the first call imports something heavy; later calls are quick
    m = measure(costing(clock, [8.0, 0.125]), repeat=5, min_time=0.0, max_seconds=1.0, clock=clock)
    assert len(m.times) == 5 and not m.limited
    assert m.warmup == pytest.approx(8.0)
    assert m.stats.median == pytest.approx(0.125)


def test_budget_that_suffices_is_not_marked():
    clock = FakeClock()
    m = measure(costing(clock, 0.1), repeat=5, min_time=0.0, max_seconds=10.0, clock=clock)
    assert len(m.times) == 5 and not m.limited


def test_clock_that_never_advances_stops_at_repeat():
    clock = FakeClock()
    m = measure(lambda: None, repeat=3, min_time=1.0, clock=clock, round_time=0.0)
    assert len(m.times) == 3


@pytest.mark.parametrize("kwargs", [{"repeat": 0}, {"min_time": -1.0}, {"max_seconds": 0.0}])
def test_measure_refuses_bad_settings(kwargs):
    with pytest.raises(CnnCheckError):
        measure(lambda: None, clock=FakeClock(), **kwargs)


# -- run_bench with fake implementations -------------------------------------------
POOL_PARAMS = {"shape": (2, 2, 4, 4)}
CONV_PARAMS = {"shape": (2, 3, 5, 5), "filters": 2, "kernel": (3, 3), "stride": 2, "pad": 1}


def timed_impl(clock, layer, name, forward, backward, fwd_cost, bwd_cost, backend="test"):
    """An Impl that runs real functions and advances the fake clock by a fixed cost."""
    def fwd(*args):
        clock.advance(fwd_cost)
        return forward(*args)

    def bwd(dout, cache):
        clock.advance(bwd_cost)
        return backward(dout, cache)

    return Impl(layer, name, fwd, bwd, backend)


def config(**kwargs):
    base = {"repeat": 3, "min_time": 0.0, "max_seconds": None, "baseline": "naive", "max_diff": 1e-9}
    base.update(kwargs)
    return BenchConfig(**base)


def pool_pair(clock, fast_fwd=None, fast_bwd=None):
    slow = timed_impl(clock, "pool", "naive", naive.max_pool_forward_naive, naive.max_pool_backward_naive, 1.0, 2.0)
    fast = timed_impl(clock, "pool", "fast", fast_fwd or naive.max_pool_forward_naive,
                      fast_bwd or naive.max_pool_backward_naive, 0.1, 0.25)
    return slow, fast


def rows_by(results):
    return {(r.impl, r.direction): r for r in results}


def test_speedup_throughput_and_agreement():
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    cases = plan_cases([(POOL, fast), (POOL, slow)], overrides=POOL_PARAMS)
    assert [i.name for i in cases[0].impls] == ["naive", "fast"]  # baseline first
    results = run_bench(cases, config(), clock=clock)
    rows = rows_by(results)
    assert [(r.impl, r.direction) for r in results] == [
        ("naive", "forward"), ("naive", "backward"), ("fast", "forward"), ("fast", "backward")]
    assert rows["naive", "forward"].median == pytest.approx(1.0)
    assert rows["naive", "forward"].is_baseline and rows["naive", "forward"].speedup is None
    assert rows["fast", "forward"].speedup == pytest.approx(10.0)
    assert rows["fast", "backward"].speedup == pytest.approx(8.0)
    assert rows["fast", "forward"].baseline == "naive"
    assert rows["fast", "forward"].difference == 0.0
    assert rows["fast", "backward"].differences == {"dx": 0.0}
    # pool moves (inputs + outputs) bytes: 2*2*4*4 + 2*2*2*2 elements of 8 bytes
    moved = (64 + 16) * 8
    assert rows["fast", "forward"].bytes == moved
    assert rows["fast", "forward"].gbps == pytest.approx(moved / 0.1 / 1e9)
    assert rows["fast", "forward"].gflops is None
    assert all(r.status == BenchStatus.OK and r.passed for r in results)
    assert all(r.stats.rounds == 3 and not r.limited for r in results)


def test_conv_gflops_and_percent_of_peak():
    clock = FakeClock()
    slow = timed_impl(clock, "conv", "naive", naive.conv_forward_naive, naive.conv_backward_naive, 2.0, 4.0)
    cases = plan_cases([(CONV, slow)], overrides=CONV_PARAMS)
    results = run_bench(cases, config(), clock=clock, peak_gflops=1e-3)
    fwd, bwd = results
    flops_fwd, flops_bwd = CONV.flops(cases[0].params)
    assert fwd.flops == flops_fwd and bwd.flops == flops_bwd
    assert fwd.gflops == pytest.approx(flops_fwd / 2.0 / 1e9)
    assert bwd.gflops == pytest.approx(flops_bwd / 4.0 / 1e9)
    assert fwd.peak_percent == pytest.approx(100 * fwd.gflops / 1e-3)
    assert fwd.gbps is None


def test_backward_reuses_one_forward_cache_and_gets_the_dtype():
    clock = FakeClock()
    caches_seen, dtypes = [], []

    def fwd(x, pool_param):
        clock.advance(0.01)
        dtypes.append(x.dtype)
        out, cache = naive.max_pool_forward_naive(x, pool_param)
        return out, ("token", len(dtypes), cache)

    def bwd(dout, cache):
        clock.advance(0.01)
        caches_seen.append(cache[1])
        return naive.max_pool_backward_naive(dout, cache[2])

    impl = Impl("pool", "fast", fwd, bwd, "test")
    run_bench(plan_cases([(POOL, impl)], overrides=POOL_PARAMS), config(dtype="float32"), clock=clock)
    assert set(caches_seen) == {1}  # every backward call used the first forward call's cache
    assert len(caches_seen) >= 4
    assert set(dtypes) == {np.dtype(np.float32)}


def test_output_beyond_max_diff_fails_and_names_it():
    clock = FakeClock()

    def off_forward(x, pool_param):
        out, cache = naive.max_pool_forward_naive(x, pool_param)
        return out * (1 + 1e-6), cache

    slow, fast = pool_pair(clock, fast_fwd=off_forward)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    rows = rows_by(results)
    bad = rows["fast", "forward"]
    assert bad.status == BenchStatus.DIFFERS and not bad.passed
    assert bad.difference == pytest.approx(1e-6 / (2 + 1e-6), rel=1e-3)
    assert "out" in bad.message and "naive" in bad.message and "--max-diff" in bad.message
    assert rows["fast", "backward"].status == BenchStatus.OK


def test_gradient_beyond_max_diff_names_the_gradient():
    clock = FakeClock()

    def off_backward(dout, cache):
        dx, dw, db = naive.conv_backward_naive(dout, cache)
        return dx, dw + 1e-3, db

    slow = timed_impl(clock, "conv", "naive", naive.conv_forward_naive, naive.conv_backward_naive, 1.0, 1.0)
    fast = timed_impl(clock, "conv", "fast", naive.conv_forward_naive, off_backward, 0.5, 0.5)
    results = run_bench(plan_cases([(CONV, slow), (CONV, fast)], overrides=CONV_PARAMS), config(), clock=clock)
    bad = rows_by(results)["fast", "backward"]
    assert bad.status == BenchStatus.DIFFERS
    assert bad.differences["dx"] == 0.0 and bad.differences["db"] == 0.0
    assert bad.differences["dw"] > 1e-9
    assert "dw" in bad.message


def test_nan_output_differs():
    clock = FakeClock()

    def nan_forward(x, pool_param):
        out, cache = naive.max_pool_forward_naive(x, pool_param)
        out = out.copy()
        out[0, 0, 0, 0] = np.nan
        return out, cache

    slow, fast = pool_pair(clock, fast_fwd=nan_forward)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    assert rows_by(results)["fast", "forward"].status == BenchStatus.DIFFERS


def test_min_speedup_marks_slow_rows():
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS),
                        config(min_speedup=9.0), clock=clock)
    rows = rows_by(results)
    assert rows["fast", "forward"].status == BenchStatus.OK          # 10x
    assert rows["fast", "backward"].status == BenchStatus.SLOW       # 8x
    assert "8x" in rows["fast", "backward"].message and "--min-speedup 9" in rows["fast", "backward"].message
    assert rows["naive", "backward"].status == BenchStatus.OK        # the baseline is not held to it


def test_raising_implementation_becomes_an_error_row():
    clock = FakeClock()

    def broken(x, pool_param):
        raise RuntimeError("boom")

    slow, fast = pool_pair(clock, fast_fwd=broken)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    rows = rows_by(results)
    assert rows["fast", "forward"].status == BenchStatus.ERROR
    assert "RuntimeError: boom" in rows["fast", "forward"].message
    assert rows["fast", "forward"].stats is None and rows["fast", "forward"].speedup is None
    assert rows["fast", "backward"].status == BenchStatus.ERROR
    assert "forward pass failed" in rows["fast", "backward"].message
    assert rows["naive", "forward"].passed


def test_backward_returning_none_is_not_implemented():
    clock = FakeClock()
    slow, fast = pool_pair(clock, fast_bwd=lambda dout, cache: None)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    assert rows_by(results)["fast", "backward"].status == BenchStatus.NOT_IMPLEMENTED


def test_wrong_output_shape_is_an_error():
    clock = FakeClock()

    def wrong(x, pool_param):
        out, cache = naive.max_pool_forward_naive(x, pool_param)
        return out[:1], cache

    slow, fast = pool_pair(clock, fast_fwd=wrong)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    row = rows_by(results)["fast", "forward"]
    assert row.status == BenchStatus.ERROR and "shape" in row.message


def test_wrong_gradient_count_is_an_error():
    clock = FakeClock()
    slow = timed_impl(clock, "conv", "naive", naive.conv_forward_naive, lambda d, c: (1, 2), 1.0, 1.0)
    results = run_bench(plan_cases([(CONV, slow)], overrides=CONV_PARAMS), config(), clock=clock)
    assert results[1].status == BenchStatus.ERROR and "2 gradient(s), expected 3" in results[1].message


def test_layer_without_the_baseline_has_no_speedup():
    clock = FakeClock()
    impl = timed_impl(clock, "affine", "numpy", naive.affine_forward, naive.affine_backward, 0.01, 0.02)
    results = run_bench(plan_cases([(AFFINE, impl)], overrides={"shape": (3, 4), "filters": 2}), config(),
                        clock=clock)
    for r in results:
        assert r.speedup is None and r.difference is None and r.baseline is None and not r.is_baseline
        assert r.passed
    assert results[0].gflops == pytest.approx(2 * 3 * 4 * 2 / 0.01 / 1e9)


def test_progress_callback_counts_measurements():
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    calls = []
    run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock,
              progress=lambda done, total, label: calls.append((done, total, label)))
    assert calls == [
        (0, 4, "pool naive forward"), (1, 4, "pool naive backward"),
        (2, 4, "pool fast forward"), (3, 4, "pool fast backward"), (4, 4, ""),
    ]


def test_the_harness_prints_nothing(capsys):
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_max_seconds_marks_rows_limited():
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS),
                        config(repeat=5, max_seconds=3.5), clock=clock)
    rows = rows_by(results)
    # naive forward 1 s: 3 runs fit in 3.5 s; backward 2 s: one run, a second would end at 4 s
    assert rows["naive", "forward"].limited and rows["naive", "forward"].stats.rounds == 3
    assert rows["naive", "backward"].limited and rows["naive", "backward"].stats.rounds == 1
    assert not rows["fast", "forward"].limited and rows["fast", "forward"].stats.rounds == 5


# -- planning -------------------------------------------------------------------
def test_plan_resolves_bench_defaults():
    impl = Impl("conv", "naive", naive.conv_forward_naive, naive.conv_backward_naive)
    (case,) = plan_cases([(CONV, impl)])
    assert case.params == {"shape": (100, 3, 31, 31), "filters": 25, "kernel": (3, 3), "stride": 2, "pad": 1}
    assert CONV.output_shape(case.params) == (100, 25, 16, 16)


def test_plan_with_a_sweep_makes_one_case_per_value():
    from cnncheck.sweep import Sweep

    impl = Impl("relu", "numpy", naive.relu_forward, naive.relu_backward)
    cases = plan_cases([(RELU, impl)], overrides={"shape": (2, 3, 4, 4)}, sweep=Sweep("N", (1, 2, 4)))
    assert [c.sweep_value for c in cases] == [1, 2, 4]
    assert [c.params["shape"] for c in cases] == [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]


def test_check_plan_refuses_min_speedup_without_the_baseline():
    impl = Impl("pool", "fast", naive.max_pool_forward_naive, naive.max_pool_backward_naive)
    cases = plan_cases([(POOL, impl)], overrides=POOL_PARAMS)
    with pytest.raises(CnnCheckError, match="--min-speedup needs the baseline"):
        bench.check_plan(cases, config(min_speedup=2.0))
    with pytest.raises(CnnCheckError, match="nothing to benchmark"):
        bench.check_plan([], config())


def test_planned_keys_cover_every_row():
    clock = FakeClock()
    slow, fast = pool_pair(clock)
    cases = plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS)
    keys = bench.planned_keys(cases, "float64")
    results = run_bench(cases, config(), clock=clock)
    assert [(k["impl"], k["direction"]) for k in keys] == [(r.impl, r.direction) for r in results]
    assert all(k["params"] == r.params for k, r in zip(keys, results))


def test_default_max_diff_per_dtype():
    assert bench.DEFAULT_MAX_DIFF["float64"] == 1e-9
    assert bench.DEFAULT_MAX_DIFF["float32"] > bench.DEFAULT_MAX_DIFF["float64"]
    assert not math.isnan(bench.DEFAULT_MAX_DIFF["float32"])


def test_bench_case_is_a_plain_dataclass():
    case = BenchCase(POOL, (), {"shape": (1, 1, 2, 2)})
    assert case.sweep_value is None


# -- difference ---------------------------------------------------------------------
def test_difference_is_the_seed_rel_error_in_float64():
    from cnncheck.gradient_check import rel_error

    a = np.array([10.0, 1e-6, -3.0])
    b = np.array([10.0, -1e-6, -3.0 + 3e-9])
    assert bench.difference(a, b, "float64") == rel_error(a, b) == pytest.approx(1.0)


def test_difference_in_float32_measures_near_zero_elements_against_the_scale():
    a = np.array([10.0, 1e-6], dtype=np.float32)
    b = np.array([10.0, -1e-6], dtype=np.float32)
    # floor 1e-3 * (10 + 10) = 0.02: 2e-6 / 0.02
    assert bench.difference(a, b, "float32") == pytest.approx(1e-4, rel=1e-3)
    wrong = np.array([10.0, 2.0], dtype=np.float32)
    right = np.array([10.0, 1.0], dtype=np.float32)
    assert bench.difference(wrong, right, "float32") == pytest.approx(1 / 3)
    assert math.isnan(bench.difference(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), "float32"))
    assert bench.difference(np.zeros(0), np.zeros(0), "float32") == 0.0


def test_float32_run_reports_the_float32_difference():
    clock = FakeClock()

    def rounded(x, w, b, conv_param):
        out, cache = naive.conv_forward_naive(x, w, b, conv_param)
        return out + np.float32(1e-6), cache  # a rounding-sized shift everywhere

    slow = timed_impl(clock, "conv", "naive", naive.conv_forward_naive, naive.conv_backward_naive, 1.0, 1.0)
    fast = timed_impl(clock, "conv", "fast", rounded, naive.conv_backward_naive, 0.5, 0.5)
    results = run_bench(plan_cases([(CONV, slow), (CONV, fast)], overrides=CONV_PARAMS),
                        config(dtype="float32", max_diff=1e-2), clock=clock)
    row = rows_by(results)["fast", "forward"]
    assert row.passed and 0 < row.difference < 1e-4


# -- selection ----------------------------------------------------------------------
def registry_with_user_impl():
    from cnncheck.catalog import builtin_registry

    registry = builtin_registry()
    registry.add_impl(Impl("pool", "mine", naive.max_pool_forward_naive, naive.max_pool_backward_naive,
                           "user", source="mine.py"))
    return registry


def test_select_pairs_defaults_to_every_implementation():
    registry = registry_with_user_impl()
    names = [i.name for _, i in bench.select_pairs(registry, ["pool"])]
    assert names[:2] == ["naive", "fast"] and "mine" in names


def test_select_pairs_with_a_module_takes_the_baseline_and_the_module():
    registry = registry_with_user_impl()
    pairs = bench.select_pairs(registry, ["pool"], (), ["mine.py"])
    assert [i.name for _, i in pairs] == ["naive", "mine"]
    assert [i.name for _, i in bench.select_pairs(registry, ["pool"], ["all"], ["mine.py"])][:2] == ["naive", "fast"]


def test_select_pairs_checks_a_named_baseline():
    registry = registry_with_user_impl()
    with pytest.raises(CnnCheckError, match="unknown --baseline 'nope'"):
        bench.select_pairs(registry, ["pool"], baseline="nope", check_baseline=True)
    assert bench.select_pairs(registry, ["affine"], baseline="naive", check_baseline=False)


def test_plan_refuses_a_parameter_no_selected_layer_takes():
    impl = Impl("pool", "fast", naive.max_pool_forward_naive, naive.max_pool_backward_naive)
    with pytest.raises(CnnCheckError, match="--pad does not apply to pool"):
        plan_cases([(POOL, impl)], overrides={"pad": 1})


def test_not_implemented_error_is_not_implemented():
    clock = FakeClock()

    def missing(*args):
        raise NotImplementedError("mine.py does not define max_pool_forward_naive")

    slow, fast = pool_pair(clock, fast_fwd=missing)
    results = run_bench(plan_cases([(POOL, slow), (POOL, fast)], overrides=POOL_PARAMS), config(), clock=clock)
    rows = rows_by(results)
    assert rows["fast", "forward"].status == BenchStatus.NOT_IMPLEMENTED
    assert rows["fast", "backward"].status == BenchStatus.NOT_IMPLEMENTED
    assert "not implemented" in rows["fast", "backward"].message
