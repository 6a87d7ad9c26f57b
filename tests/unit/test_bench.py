"""The bench engine: checking calls through the boundary, agreement, timing, planning.

Implementations under test are Python functions run in this process (a
LocalSession); shapes are tiny and the timing settings minimal, so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import pytest

from cnncheck import bench, catalog, runner
from cnncheck.bench import BACKWARD, FORWARD
from cnncheck.errors import CnnCheckError
from cnncheck.gradient_check import rel_error
from cnncheck.layers import naive
from cnncheck.loading import Loaded, builtin_registry, function_impl
from cnncheck.results import BenchConfig
from cnncheck.session import LocalSession

RELU, CONV, POOL, AFFINE = (catalog.spec(name) for name in ("relu", "conv", "pool", "affine"))
QUICK = dict(repeat=2, min_time=0.0, max_seconds=5.0)
SMALL = {"relu": {"shape": (2, 3, 4, 4)}, "pool": {"shape": (2, 2, 4, 4)},
         "conv": {"shape": (2, 3, 6, 6), "filters": 2}, "affine": {"shape": (3, 5), "filters": 4}}


def loaded_with(*extra) -> Loaded:
    """The built-in layers plus ``extra`` implementations, all in one LocalSession."""
    registry = builtin_registry()
    for impl in extra:
        registry.add_impl(impl)
    functions = {}
    for layer in registry.layer_names():
        for impl in registry.impls(layer):
            functions.update(impl.functions)
    return Loaded(registry, local=LocalSession(functions))


def config(**changes) -> BenchConfig:
    return BenchConfig(**{**QUICK, "baseline": None, **changes})


def run(layer: str, impls, *extra, overrides=None, peak_gflops=None, **changes):
    """Rows of ``layer`` for the implementations named ``impls`` (the reference first when listed)."""
    loaded = loaded_with(*extra)
    pairs = loaded.registry.select([layer], impls)
    cases = bench.plan_cases(pairs, overrides=overrides or SMALL[layer])
    try:
        return bench.run_bench(loaded, cases, config(**changes), peak_gflops=peak_gflops)
    finally:
        loaded.close()


def row(rows, impl, direction):
    (found,) = [r for r in rows if r.impl == impl and r.direction == direction]
    return found


def relu_impl(name, forward=None, backward=None):
    return function_impl("relu", name, forward or naive.relu_forward, backward or naive.relu_backward, "test")


def conv_impl(name, forward=None, backward=None):
    return function_impl("conv", name, forward or naive.conv_forward_naive, backward or naive.conv_backward_naive,
                         "test")


# -- agreement, speedup, throughput ------------------------------------------------------------
def test_every_row_is_compared_with_the_reference_by_default():
    rows = run("relu", ["numpy", "fast"])
    assert [(r.impl, r.direction) for r in rows] == [("numpy", FORWARD), ("numpy", BACKWARD),
                                                     ("fast", FORWARD), ("fast", BACKWARD)]
    base, fast = row(rows, "numpy", FORWARD), row(rows, "fast", FORWARD)
    assert base.is_baseline and base.baseline is None and base.speedup is None and base.difference is None
    assert fast.baseline == "numpy" and not fast.is_baseline
    assert fast.speedup == pytest.approx(base.median / fast.median)
    assert fast.differences == {"out": 0.0} and fast.difference == 0.0
    assert set(row(rows, "fast", BACKWARD).differences) == {"dx"}
    assert all(r.status == "ok" and r.stats.rounds >= 2 for r in rows)


def test_conv_rates_come_from_the_spec_and_the_peak():
    rows = run("conv", ["naive", "fast"], peak_gflops=10.0)
    params = CONV.resolve(SMALL["conv"], purpose="bench")
    for r in rows:
        flops = CONV.flops(params)[0 if r.direction == FORWARD else 1]
        assert r.flops == flops
        assert r.gflops == pytest.approx(flops / r.median / 1e9)
        assert r.peak_percent == pytest.approx(10 * r.gflops)
        assert r.gbps is None
    assert set(row(rows, "fast", BACKWARD).differences) == {"dx", "dw", "db"}


def test_pool_rates_are_bytes():
    rows = run("pool", ["naive", "fast"])
    moved = POOL.bytes(POOL.resolve(SMALL["pool"], purpose="bench"), 8)
    assert row(rows, "fast", FORWARD).gbps == pytest.approx(moved[0] / row(rows, "fast", FORWARD).median / 1e9)
    assert row(rows, "fast", FORWARD).gflops is None


def test_output_beyond_max_diff_differs_and_names_it():
    def forward(x):
        out, cache = naive.relu_forward(x)
        return out * (1 + 1e-6), cache

    rows = run("relu", ["numpy", "off"], relu_impl("off", forward))
    bad = row(rows, "off", FORWARD)
    assert bad.status == "differs" and not bad.passed
    assert bad.message.startswith("differs from numpy: difference 5e-07 in out is above --max-diff 1e-09")
    assert row(rows, "off", BACKWARD).status == "ok"
    loose = run("relu", ["numpy", "off"], relu_impl("off", forward), max_diff=1e-3)
    assert row(loose, "off", FORWARD).status == "ok"


def test_gradient_beyond_max_diff_names_the_gradient():
    def backward(dout, cache):
        dx, dw, db = naive.conv_backward_naive(dout, cache)
        return dx, dw * 1.01, db

    rows = run("conv", ["naive", "dwoff"], conv_impl("dwoff", backward=backward))
    bad = row(rows, "dwoff", BACKWARD)
    assert bad.status == "differs" and " in dw is above" in bad.message
    assert bad.differences["dx"] == 0.0 and bad.differences["dw"] > 1e-3


def test_min_speedup_marks_slow_rows_but_not_the_baseline():
    rows = run("relu", ["numpy", "fast"], min_speedup=1e9)
    assert row(rows, "fast", FORWARD).status == "slow"
    assert "below --min-speedup 1e+09" in row(rows, "fast", FORWARD).message
    assert row(rows, "numpy", FORWARD).status == "ok"


def test_a_layer_without_its_baseline_has_no_comparison():
    rows = run("relu", ["fast"])
    assert all(r.baseline is None and r.speedup is None and r.difference is None and not r.is_baseline
               for r in rows)


def test_float32_inputs_reach_the_implementation_and_the_float32_difference_applies():
    seen = []

    def forward(x):
        seen.append(x.dtype)
        return naive.relu_forward(x)

    rows = run("relu", ["numpy", "spy"], relu_impl("spy", forward), dtype="float32", max_diff=1e-2)
    assert set(seen) == {np.dtype(np.float32)}
    assert all(r.dtype == "float32" and r.status == "ok" for r in rows)


# -- what the code under test does: the boundary's statuses and words ---------------------------------
@pytest.mark.parametrize("forward, status, message", [
    (lambda x: sys.exit(7), "error", "forward called sys.exit(7)"),
    (lambda x: (_ for _ in ()).throw(RuntimeError("boom")), "error", "forward raised RuntimeError: boom"),
    (lambda x: (np.maximum(x, 0).astype(int), x), "error", "out has dtype int64, expected float64"),
    (lambda x: (np.full(x.shape, np.nan), x), "error", "out contains NaN (first at out[0, 0, 0, 0])"),
    (lambda x: (x[0], x), "error", "out has shape (3, 4, 4), expected (2, 3, 4, 4)"),
    (lambda x: None, "not-implemented", "forward returned None"),
    (lambda x: np.maximum(x, 0), "error", "forward returned numpy.ndarray, expected a tuple (out, cache)"),
])
def test_forward_misbehaviour_is_a_row_with_gradchecks_words(forward, status, message):
    rows = run("relu", ["numpy", "bad"], relu_impl("bad", forward))
    fwd, bwd = row(rows, "bad", FORWARD), row(rows, "bad", BACKWARD)
    assert (fwd.status, fwd.message) == (status, message)
    assert fwd.stats is None and fwd.speedup is None
    missing = "is not implemented" if status == "not-implemented" else "failed"
    assert (bwd.status, bwd.message) == (status, f"not timed: the forward pass {missing}")
    assert row(rows, "numpy", FORWARD).status == "ok"   # the run went on


@pytest.mark.parametrize("backward, status, message", [
    (lambda dout, cache: None, "not-implemented", "backward returned None"),
    (lambda dout, cache: (None, None, None), "not-implemented", "dx is None (not implemented yet?)"),
    (lambda dout, cache: (np.zeros(cache[0].shape), np.zeros(cache[1].shape)), "error",
     "backward returned tuple of length 2, expected a tuple (dx, dw, db)"),
    (lambda dout, cache: sys.exit(3), "error", "backward called sys.exit(3)"),
    (lambda dout, cache: (np.zeros(cache[0].shape, dtype=complex), np.zeros(cache[1].shape),
                          np.zeros(cache[2].shape)), "error", "dx has dtype complex128, expected float64"),
])
def test_backward_misbehaviour(backward, status, message):
    rows = run("conv", ["naive", "bad"], conv_impl("bad", backward=backward))
    assert row(rows, "bad", FORWARD).status == "ok"
    bwd = row(rows, "bad", BACKWARD)
    assert (bwd.status, bwd.message) == (status, message)


def test_list_returns_are_accepted_with_a_warning():
    def forward(x):
        out, cache = naive.relu_forward(x)
        return [out.tolist(), cache]

    rows = run("relu", ["numpy", "lists"], relu_impl("lists", forward))
    fwd = row(rows, "lists", FORWARD)
    assert fwd.status == "ok" and fwd.passed and fwd.difference == 0.0
    assert fwd.message == "warning: out is a list, not an ndarray; cnncheck converted it"


def test_a_call_that_fails_only_while_timed_is_an_error():
    calls = []

    def forward(x):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("second call")
        return naive.relu_forward(x)

    fwd = row(run("relu", ["numpy", "once"], relu_impl("once", forward)), "once", FORWARD)
    assert (fwd.status, fwd.message) == ("error", "forward (while timing) raised ValueError: second call")


def test_missing_functions_and_module_problems_are_rows():
    from cnncheck.boundary import Problem
    from cnncheck.specs import Impl
    from cnncheck.status import Status

    missing = Impl("relu", "half", "relu_forward", "relu_backward", "missing", "half.py",
                   missing="half.py does not define relu_backward")
    loaded = loaded_with()
    loaded.registry.add_impl(missing)
    cheat = function_impl("relu", "cheat", naive.relu_forward, naive.relu_backward, "test", source="cheat.py")
    loaded.registry.add_impl(cheat)
    loaded.local.server.functions.update(cheat.functions)
    loaded.problems["cheat.py"] = [Problem(Status.USES_REFERENCE, "imports cnncheck")]
    cases = bench.plan_cases(loaded.registry.select(["relu"], ["numpy", "half", "cheat"]),
                             overrides=SMALL["relu"])
    rows = bench.run_bench(loaded, cases, config())
    assert {(r.status, r.message) for r in rows if r.impl == "half"} == {
        ("not-implemented", "half.py does not define relu_backward")}
    assert {(r.status, r.message) for r in rows if r.impl == "cheat"} == {("uses-reference", "imports cnncheck")}


# -- timing ---------------------------------------------------------------------------------------------
def test_backward_reuses_the_cache_of_the_checking_forward_call():
    caches = []

    def forward(x):
        out, cache = naive.relu_forward(x)
        holder = [cache]
        caches.append(holder)
        return out, holder

    def backward(dout, holder):
        caches.append(("backward", id(holder)))
        return naive.relu_backward(dout, holder[0])

    run("relu", ["spy"], relu_impl("spy", forward, backward))
    first = caches[0]
    used = {entry[1] for entry in caches if isinstance(entry, tuple)}
    assert used == {id(first)}
    assert sum(isinstance(entry, tuple) for entry in caches) >= 3   # the checking call and the timed ones


def test_a_slow_checking_call_is_the_one_timed_run():
    calls = []

    def forward(x):
        calls.append(1)
        time.sleep(0.03)
        return naive.relu_forward(x)

    rows = run("relu", ["slow"], relu_impl("slow", forward), repeat=5, max_seconds=0.05)
    fwd = row(rows, "slow", FORWARD)
    assert len(calls) == 1                                # checked and timed by the same call
    assert fwd.stats.rounds == 1 and fwd.limited and fwd.loops == 1
    assert fwd.median >= 0.03
    again = run("relu", ["slow"], relu_impl("slow", forward), repeat=1, min_time=0.0, max_seconds=0.05)
    assert not row(again, "slow", FORWARD).limited       # one run is all that was asked for


def test_a_quick_checking_call_is_followed_by_warm_up_and_runs():
    calls = []

    def forward(x):
        calls.append(1)
        return naive.relu_forward(x)

    fwd = row(run("relu", ["quick"], relu_impl("quick", forward), repeat=3), "quick", FORWARD)
    assert fwd.stats.rounds >= 3 and fwd.loops > 1 and not fwd.limited
    assert len(calls) >= 1 + 1 + 3 * fwd.loops              # check, warm-up, runs


def test_progress_counts_rows():
    seen = []
    loaded = loaded_with()
    cases = bench.plan_cases(loaded.registry.select(["relu", "pool"], ["numpy", "naive", "fast"]),
                             overrides={"shape": (2, 2, 4, 4)})
    rows = bench.run_bench(loaded, cases, config(), progress=lambda *a: seen.append(a))
    assert len(rows) == 8
    assert seen[0] == (0, 8, "relu numpy forward") and seen[-1] == (8, 8, "")
    assert [done for done, _, _ in seen] == list(range(9))


def test_the_engine_prints_nothing_even_when_the_code_does(capsys):
    def forward(x):
        print("debug output")
        return naive.relu_forward(x)

    run("relu", ["chatty"], relu_impl("chatty", forward))
    captured = capsys.readouterr()
    assert captured.out == "" and "debug output" in captured.err


def test_an_interrupted_run_keeps_the_rows_before():
    def forward(x):
        raise KeyboardInterrupt

    loaded = loaded_with(relu_impl("stop", forward))
    cases = bench.plan_cases(loaded.registry.select(["relu"], ["numpy", "stop"]), overrides=SMALL["relu"])
    rows = []
    with pytest.raises(KeyboardInterrupt):
        for r in bench.iter_bench(loaded, cases, config()):
            rows.append(r)
    assert [(r.impl, r.direction) for r in rows] == [("numpy", FORWARD), ("numpy", BACKWARD)]


def test_the_timing_loop_groups_fast_calls_and_stops_at_the_budget():
    ticks = iter(range(10_000))
    clock = lambda: next(ticks) * 1.0                    # noqa: E731  every reading one second later
    times, loops, limited = runner.measure(lambda: None, repeat=10, min_time=0.0, max_seconds=3.0, clock=clock)
    assert loops == 1 and limited and 1 <= len(times) < 10
    fast = runner.measure(lambda: None, repeat=2, min_time=0.0, round_time=1e-3)
    assert fast[1] > 1 and len(fast[0]) == 2 and not fast[2]


# -- planning ---------------------------------------------------------------------------------------------
def test_plan_resolves_bench_defaults_and_puts_the_baseline_first():
    registry = builtin_registry()
    (case,) = bench.plan_cases([(CONV, registry.impl("conv", "fast")), (CONV, registry.impl("conv", "naive"))])
    assert case.params["shape"] == (100, 3, 31, 31) and case.params["filters"] == 25
    assert [i.name for i in case.impls] == ["naive", "fast"] and case.baseline == "naive"
    (other,) = bench.plan_cases([(CONV, registry.impl("conv", "naive")), (CONV, registry.impl("conv", "fast"))],
                                baseline="fast")
    assert [i.name for i in other.impls] == ["fast", "naive"] and other.baseline == "fast"
    (alone,) = bench.plan_cases([(CONV, registry.impl("conv", "fast"))])
    assert alone.baseline is None


def test_add_baselines_adds_each_layers_reference():
    registry = builtin_registry()
    mine = [(RELU, relu_impl("mine")), (CONV, conv_impl("mine"))]
    pairs = bench.add_baselines(registry, mine)
    assert [(s.name, i.name) for s, i in pairs] == [("relu", "numpy"), ("relu", "mine"),
                                                    ("conv", "naive"), ("conv", "mine")]
    assert [(s.name, i.name) for s, i in bench.add_baselines(registry, mine, "fast")] == [
        ("relu", "fast"), ("relu", "mine"), ("conv", "fast"), ("conv", "mine")]
    absent = dataclasses.replace(conv_impl("mine"), missing="mine.py does not define conv_forward_naive")
    assert [(s.name, i.name) for s, i in bench.add_baselines(registry, [(CONV, absent)])] == [("conv", "mine")]


def test_check_baseline_names_what_the_layers_have_or_what_to_install():
    registry = builtin_registry()
    bench.check_baseline(registry, [POOL], "fast")
    with pytest.raises(CnnCheckError, match="unknown --baseline 'nope'; the selected layers have: fast, naive"):
        bench.check_baseline(registry, [POOL], "nope")
    registry.unavailable[("pool", "gpu")] = "cupy, which is not installed: pip install 'cnncheck[cupy]'"
    with pytest.raises(CnnCheckError, match=r"--baseline gpu needs cupy.*pip install 'cnncheck\[cupy\]'"):
        bench.check_baseline(registry, [POOL], "gpu")


def test_plan_with_a_sweep_makes_one_case_per_value():
    from cnncheck.sweep import Sweep

    registry = builtin_registry()
    cases = bench.plan_cases([(POOL, registry.impl("pool", "fast"))], sweep=Sweep("N", (1, 4)))
    assert [(c.sweep_value, c.params["shape"]) for c in cases] == [(1, (1, 3, 32, 32)), (4, (4, 3, 32, 32))]
    with pytest.raises(CnnCheckError, match="--sweep D does not apply to pool; it takes N, C, H, W, K"):
        bench.plan_cases([(POOL, registry.impl("pool", "fast"))], sweep=Sweep("D", (1, 4)))


def test_check_plan_refuses_comparisons_that_cannot_happen():
    registry = builtin_registry()
    alone = bench.plan_cases([(POOL, registry.impl("pool", "fast"))])
    bench.check_plan(alone, config())
    with pytest.raises(CnnCheckError, match="--min-speedup needs a baseline"):
        bench.check_plan(alone, config(min_speedup=2.0))
    with pytest.raises(CnnCheckError, match="--max-diff needs a baseline"):
        bench.check_plan(alone, config(), max_diff_given=True)
    with pytest.raises(CnnCheckError, match="nothing to benchmark"):
        bench.check_plan([], config())
    both = bench.plan_cases([(POOL, registry.impl("pool", "naive")), (POOL, registry.impl("pool", "fast"))])
    bench.check_plan(both, config(min_speedup=2.0), max_diff_given=True)


def test_planned_keys_cover_every_row():
    registry = builtin_registry()
    cases = bench.plan_cases([(POOL, registry.impl("pool", "naive")), (POOL, registry.impl("pool", "fast"))],
                             overrides=SMALL["pool"])
    keys = bench.planned_keys(cases, "float64")
    assert [(k["impl"], k["direction"]) for k in keys] == [("naive", FORWARD), ("naive", BACKWARD),
                                                          ("fast", FORWARD), ("fast", BACKWARD)]
    assert keys[0]["params"]["shape"] == (2, 2, 4, 4) and keys[0]["dtype"] == "float64"


def test_failed_module_rows():
    from cnncheck.results import CheckResult
    from cnncheck.status import Status

    failed = [CheckResult("relu", "cheat", "integrity", "out", Status.USES_REFERENCE, message="imports cnncheck",
                          source="cheat.py")]
    rows = bench.failed_module_rows(failed, builtin_registry(), config(overrides={"shape": (2, 3)}))
    assert [(r.impl, r.direction, r.status, r.message, r.params["shape"]) for r in rows] == [
        ("cheat", FORWARD, "uses-reference", "imports cnncheck", (2, 3)),
        ("cheat", BACKWARD, "uses-reference", "imports cnncheck", (2, 3))]


def test_bench_run_json_says_interrupted_and_does_not_pass():
    from cnncheck.results import BenchResult
    from cnncheck.stats import Stats

    ok = BenchResult("relu", FORWARD, "numpy", stats=Stats.from_times([1e-3]))
    report = bench.BenchRun(machine={}, config=config(), results=(ok,), interrupted=True)
    data = report.to_dict()
    assert data["interrupted"] is True and data["passed"] is False and data["schema_version"] == 2
    assert dataclasses.replace(report, interrupted=False).to_dict()["passed"] is True


# -- the agreement metric -----------------------------------------------------------------------------------
def test_difference_is_the_notebooks_rel_error_in_float64():
    a = np.array([1.0, -2.0, 3e-9])
    b = np.array([1.0 + 1e-6, -2.0, 0.0])
    assert bench.difference(a, b) == rel_error(a, b)
    assert bench.difference(a, b) == pytest.approx(3e-9 / 1e-8)


def test_difference_in_float32_holds_near_zero_elements_to_the_scale():
    a = np.array([100.0, 1e-6], dtype=np.float32)
    b = np.array([100.0, -1e-6], dtype=np.float32)
    assert rel_error(a, b) == pytest.approx(1.0)
    floor = 1e-3 * 200.0
    assert bench.difference(a, b, "float32") == pytest.approx(2e-6 / floor, rel=1e-3)
    assert bench.DEFAULT_MAX_DIFF == {"float64": 1e-9, "float32": 1e-2}
