"""The gradient-check engine: modes, statuses, kinks, dtypes, restored probes, jobs and the Python API."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

import cnncheck
from cnncheck import gradcheck as engine
from cnncheck.catalog import AFFINE, CONV, POOL, RELU, builtin_registry
from cnncheck.errors import CnnCheckError
from cnncheck.gradcheck import CheckJob, GradcheckConfig, check, run_check_job, run_checks
from cnncheck.layers import naive
from cnncheck.results import GradcheckReport, Status
from cnncheck.specs import Impl, SampleInput

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layers"
SPECS = {"affine": AFFINE, "relu": RELU, "conv": CONV, "pool": POOL}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def impl_of(layer: str, forward, backward, name: str = "test") -> Impl:
    return Impl(layer, name, forward, backward, "test", "test")


def run(layer: str, forward, backward, config: GradcheckConfig | None = None, **overrides):
    spec = SPECS[layer]
    return check(spec, impl_of(layer, forward, backward), spec.resolve(overrides), config)


def statuses(results) -> dict:
    return {r.gradient: r.status for r in results}


BUILTIN = [(layer, impl.name) for layer in ("affine", "relu", "conv", "pool")
           for impl in builtin_registry().impls(layer) if impl.name != "torch"]


# -- correct implementations pass -----------------------------------------------------
@pytest.mark.parametrize("layer,name", BUILTIN)
@pytest.mark.parametrize("mode", ["full", "sample", "directional"])
def test_builtin_implementations_pass_in_float64(layer, name, mode):
    registry = builtin_registry()
    spec = registry.layer(layer)
    results = check(spec, registry.impl(layer, name), spec.resolve({}), GradcheckConfig(mode=mode, samples=20))
    assert [r.gradient for r in results] == ["d" + g for g in spec.grads]
    for r in results:
        assert r.status == Status.PASS, r.message
        assert r.rel_error < 1e-7
        assert r.mode == mode


def test_seed_shapes_and_errors_match_the_notebook():
    """The course notebook's conv check: errors around 1e-9 and below, with its shapes."""
    registry = builtin_registry()
    results = check(CONV, registry.impl("conv", "naive"), CONV.resolve({}), GradcheckConfig())
    assert results[0].params == {"shape": [4, 3, 5, 5], "filters": 2, "kernel": [3, 3], "stride": 2, "pad": 1}
    assert all(r.rel_error < 1e-8 for r in results)
    assert [r.compared for r in results] == [4 * 3 * 5 * 5, 2 * 3 * 3 * 3, 2]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
@pytest.mark.parametrize("layer", ["affine", "relu", "conv", "pool"])
def test_torch_implementations_pass(layer):
    registry = builtin_registry()
    spec = registry.layer(layer)
    results = check(spec, registry.impl(layer, "torch"), spec.resolve({}), GradcheckConfig(mode="directional"))
    assert all(r.status == Status.PASS for r in results), [r.message for r in results]


def test_an_independent_correct_module_passes_with_odd_geometry():
    correct = load("correct")
    results = run("conv", correct.conv_forward_naive, correct.conv_backward_naive,
                  shape=(2, 2, 6, 5), filters=3, kernel=(3, 2), stride=2, pad=0)
    assert statuses(results) == {"dx": "pass", "dw": "pass", "db": "pass"}
    results = run("pool", correct.max_pool_forward_naive, correct.max_pool_backward_naive,
                  shape=(2, 2, 7, 7), pool_height=3, pool_width=2, stride=1)
    assert statuses(results) == {"dx": "pass"}


# -- float32 ------------------------------------------------------------------------
@pytest.mark.parametrize("layer,name", [p for p in BUILTIN if p != ("conv", "naive")])
@pytest.mark.parametrize("seed", range(4))
def test_float32_correct_implementations_are_never_failures(layer, name, seed):
    """What passes in float64 passes in float32 with the float32 defaults, far below the threshold."""
    registry = builtin_registry()
    spec = registry.layer(layer)
    impl = registry.impl(layer, name)
    for mode in ("full", "directional"):
        results = check(spec, impl, spec.resolve({}), GradcheckConfig(dtype="float32", mode=mode, seed=seed))
        for r in results:
            assert r.status == Status.PASS, r.message
            assert r.rel_error < r.threshold / 10
            assert r.dtype == "float32" and r.eps == engine.DEFAULT_TOLERANCES["float32"][0]


def test_float32_defaults_and_threshold():
    config = GradcheckConfig(dtype="float32")
    assert (config.step, config.threshold) == engine.DEFAULT_TOLERANCES["float32"]
    assert (GradcheckConfig().step, GradcheckConfig().threshold) == (1e-5, 1e-7)
    assert GradcheckConfig(dtype="float32", eps=0.5, max_error=0.25).step == 0.5


@pytest.mark.parametrize("fixture,layer,bad", [
    ("conv_missing_term", "conv", "dx"),
    ("conv_transposed_dw", "conv", "dw"),
    ("relu_output_sign", "relu", "dx"),
    ("pool_spread", "pool", "dx"),
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_broken_gradients_fail_in_both_dtypes(fixture, layer, bad, dtype):
    module = load(fixture)
    fwd_name, bwd_name = SPECS[layer].seed_functions["naive"]
    results = run(layer, getattr(module, fwd_name), getattr(module, bwd_name), GradcheckConfig(dtype=dtype))
    got = statuses(results)
    assert got.pop(bad) == Status.FAIL
    assert set(got.values()) <= {Status.PASS}
    failed = next(r for r in results if r.gradient == bad)
    assert failed.rel_error > 0.1
    assert f"at {bad}[" in failed.message and "analytic" in failed.message


@pytest.mark.parametrize("mode", ["sample", "directional"])
def test_broken_gradients_fail_in_every_mode(mode):
    module = load("conv_transposed_dw")
    results = run("conv", module.conv_forward_naive, module.conv_backward_naive, GradcheckConfig(mode=mode))
    assert statuses(results) == {"dx": "pass", "dw": "fail", "db": "pass"}
    if mode == "directional":
        assert results[1].worst_index is None and "direction" in results[1].message


# -- kinks ----------------------------------------------------------------------------
def _relu_sample_on_kink(dtype=np.float64):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    x.flat[[0, 5, 17]] = [0.0, 3e-6, -4e-6]       # at and within eps of relu's kink
    return SampleInput({"x": x}, None, rng.standard_normal(x.shape).astype(dtype))


def test_generated_inputs_keep_a_margin_from_kinks():
    config = GradcheckConfig()
    sample = RELU.make_inputs(RELU.resolve({"shape": (8, 8, 8, 8)}), np.random.default_rng(0),
                              np.float64, config.margin)
    assert np.abs(sample.arrays["x"]).min() >= config.margin
    params = POOL.resolve({"shape": (2, 3, 9, 9), "pool_height": 3, "pool_width": 3, "stride": 1})
    x = POOL.make_inputs(params, np.random.default_rng(0), np.float64, config.margin).arrays["x"]
    gaps = [np.diff(np.sort(x[n, c, i:i + 3, j:j + 3].ravel())).min()
            for n in range(2) for c in range(3) for i in range(7) for j in range(7)]
    assert min(gaps) >= 2 * config.margin


def test_relu_on_its_kink_is_reported_as_kink_not_failure():
    results = check(RELU, impl_of("relu", naive.relu_forward, naive.relu_backward),
                    RELU.resolve({"shape": (2, 3, 4, 4)}), GradcheckConfig(), sample=_relu_sample_on_kink())
    (r,) = results
    assert r.status == Status.KINK, r.message
    assert r.passed
    assert "nondifferentiable" in r.message


def test_relu_near_kink_in_directional_mode_is_a_kink():
    results = check(RELU, impl_of("relu", naive.relu_forward, naive.relu_backward),
                    RELU.resolve({"shape": (2, 3, 4, 4)}), GradcheckConfig(mode="directional"),
                    sample=_relu_sample_on_kink())
    # Kinks add up along a direction, so the engine falls back to comparing elements one by one.
    assert results[0].status == Status.KINK, results[0].message
    assert results[0].mode == "full" and "one by one" in results[0].message
    broken = load("relu_output_sign")
    results = check(RELU, impl_of("relu", broken.relu_forward, broken.relu_backward),
                    RELU.resolve({"shape": (2, 3, 4, 4)}), GradcheckConfig(mode="directional"),
                    sample=_relu_sample_on_kink())
    assert results[0].status == Status.FAIL


def test_a_wrong_relu_on_kink_inputs_still_fails():
    broken = load("relu_output_sign")
    results = check(RELU, impl_of("relu", broken.relu_forward, broken.relu_backward),
                    RELU.resolve({"shape": (2, 3, 4, 4)}), GradcheckConfig(), sample=_relu_sample_on_kink())
    assert results[0].status == Status.FAIL


def _pool_sample_with_ties():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=(2, 2, 4, 4)).astype(np.float64)     # many ties in every window
    return SampleInput({"x": x}, {"pool_height": 2, "pool_width": 2, "stride": 2},
                       rng.standard_normal((2, 2, 2, 2)))


@pytest.mark.parametrize("name", ["naive", "fast"])
def test_pool_ties_are_kinks_for_correct_pooling(name):
    registry = builtin_registry()
    results = check(POOL, registry.impl("pool", name), POOL.resolve({"shape": (2, 2, 4, 4)}), GradcheckConfig(),
                    sample=_pool_sample_with_ties())
    assert results[0].status == Status.KINK, results[0].message


def test_pool_ties_do_not_hide_a_wrong_pool_backward():
    broken = load("pool_spread")
    results = check(POOL, impl_of("pool", broken.max_pool_forward_naive, broken.max_pool_backward_naive),
                    POOL.resolve({"shape": (2, 2, 4, 4)}), GradcheckConfig(), sample=_pool_sample_with_ties())
    assert results[0].status == Status.FAIL


def test_a_kink_needs_the_analytic_value_between_the_one_sided_differences():
    """A relu backward that doubles the gradient on a kink input is a failure, not a kink."""
    def backward(dout, cache):
        return 2.0 * naive.relu_backward(dout, cache)

    results = check(RELU, impl_of("relu", naive.relu_forward, backward), RELU.resolve({"shape": (2, 3, 4, 4)}),
                    GradcheckConfig(), sample=_relu_sample_on_kink())
    assert results[0].status == Status.FAIL


# -- statuses for broken implementations ------------------------------------------------
def test_skeleton_returning_none_is_not_implemented():
    skeleton = load("skeleton")
    assert statuses(run("conv", skeleton.conv_forward_naive, skeleton.conv_backward_naive)) == \
        dict.fromkeys(("dx", "dw", "db"), Status.NOT_IMPLEMENTED)
    (r,) = run("relu", skeleton.relu_forward, skeleton.relu_backward)
    assert r.status == Status.NOT_IMPLEMENTED and "returned None" in r.message


def test_partially_written_backward_reports_each_gradient():
    def backward(dout, cache):
        dx, dw, db = naive.affine_backward(dout, cache)
        return dx, None, db

    assert statuses(run("affine", naive.affine_forward, backward)) == \
        {"dx": Status.PASS, "dw": Status.NOT_IMPLEMENTED, "db": Status.PASS}


def test_raising_backward_is_an_error_with_message_and_traceback():
    raising = load("raises")
    results = run("conv", raising.conv_forward_naive, raising.conv_backward_naive)
    assert statuses(results) == dict.fromkeys(("dx", "dw", "db"), Status.ERROR)
    r = results[0]
    assert r.message.startswith("backward raised IndexError: index 2 is out of bounds")
    assert "db[f] = dout[:, f].sum()" in r.traceback
    assert r.location.endswith("raises.py:13")


def test_not_implemented_error_is_not_implemented():
    def backward(dout, cache):
        raise NotImplementedError("TODO")

    assert statuses(run("relu", naive.relu_forward, backward)) == {"dx": Status.NOT_IMPLEMENTED}


def test_sys_exit_inside_an_implementation_is_an_error_not_an_exit():
    def backward(dout, cache):
        raise SystemExit(0)

    (r,) = run("relu", naive.relu_forward, backward)
    assert r.status == Status.ERROR and "sys.exit(0)" in r.message


@pytest.mark.parametrize("backward,expected", [
    (lambda dout, cache: naive.relu_backward(dout, cache).T, "dx has shape (4, 4, 3, 2), expected (2, 3, 4, 4)"),
    (lambda dout, cache: naive.relu_backward(dout, cache).astype(np.float32), "dx has dtype float32, expected float64"),
    (lambda dout, cache: naive.relu_backward(dout, cache) / 0.0, "dx contains"),
    (lambda dout, cache: np.full(cache.shape, np.inf), "dx contains inf"),
    (lambda dout, cache: naive.relu_backward(dout, cache).tolist(), "dx is a list, expected an ndarray"),
    (lambda dout, cache: (naive.relu_backward(dout, cache),) * 2, "backward returned tuple of length 2, expected dx"),
])
def test_unusable_gradients_are_errors_naming_the_problem(backward, expected):
    (r,) = run("relu", naive.relu_forward, backward)
    assert r.status == Status.ERROR
    assert expected in r.message


def test_wrong_shape_names_both_shapes():
    broken = load("misc_errors")
    results = run("affine", broken.affine_forward, broken.affine_backward)
    assert statuses(results) == {"dx": "pass", "dw": "error", "db": "pass"}
    assert results[1].message == "dw has shape (2, 32), expected (32, 2) (the shape of w)"


@pytest.mark.parametrize("forward,expected,status", [
    (lambda x: naive.relu_forward(x)[0], "forward returned ndarray, expected a tuple (out, cache)", Status.ERROR),
    (lambda x: (*naive.relu_forward(x), 1), "forward returned tuple of length 3", Status.ERROR),
    (lambda x: None, "forward returned None", Status.NOT_IMPLEMENTED),
    (lambda x: (x[0], x), "forward returned out of shape (3, 4, 4), expected (2, 3, 4, 4)", Status.ERROR),
    (lambda x: (x.astype(np.float32), x), "forward returned out of dtype float32 for float64 inputs", Status.ERROR),
    (lambda x: (x / 0.0, x), "NaN or inf", Status.ERROR),
    (lambda x: 1 / 0, "forward raised ZeroDivisionError: division by zero", Status.ERROR),
])
def test_forward_garbage_is_a_result(forward, expected, status):
    (r,) = run("relu", forward, naive.relu_backward)
    assert r.status == status
    assert expected in r.message


@pytest.mark.parametrize("layer,expected", [
    ("relu", "backward changed dout in place"),
    ("affine", "forward changed b in place"),
    ("pool", "backward changed x in place"),
])
def test_in_place_changes_are_caught(layer, expected):
    mutates = load("mutates")
    fwd_name, bwd_name = SPECS[layer].seed_functions["naive"]
    results = run(layer, getattr(mutates, fwd_name), getattr(mutates, bwd_name))
    assert {r.status for r in results} == {Status.MUTATED}
    assert results[0].message == expected


def test_a_backward_that_changes_a_cached_array_is_caught():
    def forward(x):
        out, _ = naive.relu_forward(x)
        return out, (x.copy(), out)

    def backward(dout, cache):
        x, out = cache
        out[...] = 0.0
        return naive.relu_backward(dout, x)

    (r,) = run("relu", forward, backward)
    assert r.status == Status.MUTATED
    assert r.message == "backward changed cache[1] in place"


# -- mechanics ----------------------------------------------------------------------------
class Counting:
    """A relu that counts its forward calls and records the inputs it saw."""

    def __init__(self):
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return naive.relu_forward(x)

    def backward(self, dout, cache):
        return naive.relu_backward(dout, cache)


@pytest.mark.parametrize("mode,probes,expected", [
    ("directional", 7, 1 + 2 * 7),
    ("sample", 5, 1 + 2 * 5),
    ("full", 5, 1 + 2 * 96),
])
def test_forward_calls_per_mode(mode, probes, expected):
    counting = Counting()
    (r,) = run("relu", counting.forward, counting.backward, GradcheckConfig(mode=mode, probes=probes, samples=probes))
    assert r.status == Status.PASS
    assert counting.calls == expected
    assert r.compared == (96 if mode == "full" else probes)


def test_auto_mode_switches_to_directional_above_the_limit():
    config = GradcheckConfig(auto_limit=100)
    assert [r.mode for r in run("relu", naive.relu_forward, naive.relu_backward, config, shape=(3, 34))] == \
        ["directional"]
    assert [r.mode for r in run("relu", naive.relu_forward, naive.relu_backward, config, shape=(2, 5))] == ["full"]
    assert GradcheckConfig().resolve_mode(engine.AUTO_FULL_LIMIT) == "full"
    assert GradcheckConfig().resolve_mode(engine.AUTO_FULL_LIMIT + 1) == "directional"


def test_probes_are_restored_and_the_sample_is_untouched():
    seen = []

    def forward(x, w, b):
        seen.append(x.copy())
        return naive.affine_forward(x, w, b)

    sample = AFFINE.make_inputs(AFFINE.resolve({}), np.random.default_rng(0))
    before = {k: v.copy() for k, v in sample.arrays.items()}
    results = check(AFFINE, impl_of("affine", forward, naive.affine_backward), AFFINE.resolve({}),
                    GradcheckConfig(), sample=sample)
    assert all(r.status == Status.PASS for r in results)
    for key in before:
        assert np.array_equal(sample.arrays[key], before[key])
    # Every x the forward saw differs from the original in at most one element (one probe at a time).
    assert all(np.count_nonzero(x != before["x"]) <= 1 for x in seen)


def test_same_seed_same_results_other_seed_other_inputs():
    a = run("conv", naive.conv_forward_naive, naive.conv_backward_naive, GradcheckConfig(seed=1, mode="directional"))
    b = run("conv", naive.conv_forward_naive, naive.conv_backward_naive, GradcheckConfig(seed=1, mode="directional"))
    c = run("conv", naive.conv_forward_naive, naive.conv_backward_naive, GradcheckConfig(seed=2, mode="directional"))
    assert [r.rel_error for r in a] == [r.rel_error for r in b]
    assert [r.analytic for r in a] != [r.analytic for r in c]


@pytest.mark.parametrize("kwargs,fragment", [
    ({"mode": "fast"}, "mode must be one of"),
    ({"dtype": "float16"}, "dtype must be float64 or float32"),
    ({"samples": 0}, "samples must be a positive integer"),
    ({"probes": 1.5}, "probes must be a positive integer"),
    ({"eps": -1e-5}, "eps must be a positive number"),
    ({"max_error": float("nan")}, "max_error must be a positive number"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_config_validation(kwargs, fragment):
    with pytest.raises(CnnCheckError, match=fragment):
        GradcheckConfig(**kwargs)


# -- jobs, run_checks, pickling -----------------------------------------------------------
def test_results_and_jobs_pickle():
    results = run("relu", naive.relu_forward, naive.relu_backward)
    assert pickle.loads(pickle.dumps(results)) == results
    job = CheckJob("relu", "numpy", (), {"shape": (2, 3)}, GradcheckConfig(mode="full"))
    assert pickle.loads(pickle.dumps(job)) == job


def test_run_check_job_loads_the_module_by_name():
    job = CheckJob("conv", "conv_transposed_dw", (str(FIXTURES / "conv_transposed_dw.py"),),
                   {"shape": (2, 3, 5, 5)}, GradcheckConfig(), entry_points=False)
    results = run_check_job(job)
    assert statuses(results) == {"dx": "pass", "dw": "fail", "db": "pass"}
    assert results[0].params["shape"] == [2, 3, 5, 5]
    assert results[0].source == str(FIXTURES / "conv_transposed_dw.py")


def test_run_checks_reports_each_result_and_stops_on_interrupt():
    registry = builtin_registry()
    items = [(RELU, registry.impl("relu", "numpy"), RELU.resolve({})),
             CheckJob("affine", "numpy", entry_points=False)]
    seen = []
    results = run_checks(items, GradcheckConfig(), on_result=seen.append)
    assert [r.layer for r in results] == ["relu", "affine", "affine", "affine"]
    assert seen == results

    def interrupting(dout, cache):
        raise KeyboardInterrupt

    items = [(RELU, registry.impl("relu", "numpy"), RELU.resolve({})),
             (RELU, impl_of("relu", naive.relu_forward, interrupting), RELU.resolve({}))]
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_checks(items, GradcheckConfig(), on_result=seen.append)
    assert [r.impl for r in seen] == ["numpy"]


# -- the Python API ------------------------------------------------------------------------
def test_python_api_returns_a_report():
    report = cnncheck.gradcheck("relu,pool", impl="fast,numpy", shape=(2, 2, 4, 4))
    assert isinstance(report, GradcheckReport)
    assert report.passed
    assert [(r.layer, r.impl) for r in report] == [("relu", "fast"), ("relu", "numpy"), ("pool", "fast")]
    assert report.results[2].params["shape"] == [2, 2, 4, 4]
    assert report.threshold == 1e-7
    assert "PASSED" in str(report)
    assert repr(report).startswith("<GradcheckReport PASSED: 3 gradients: 3 pass")
    html = report._repr_html_()
    assert html.startswith("<table>") and "relu" in html


def test_python_api_is_the_same_callable_as_the_engine_module():
    import cnncheck.gradcheck as module

    assert module is engine
    assert callable(cnncheck.gradcheck)
    report = module("relu", impl="numpy", mode="directional", dtype="float32")
    assert report.passed and report.results[0].dtype == "float32"
    assert cnncheck.run_gradcheck is engine.run_gradcheck


def test_python_api_accepts_a_module_object_and_paths():
    broken = load("relu_output_sign")
    report = cnncheck.gradcheck("relu", module=broken, entry_points=False)
    assert not report.passed
    assert [r.status for r in report] == [Status.FAIL]
    report = cnncheck.gradcheck("relu", module=FIXTURES / "correct.py", entry_points=False)
    assert [(r.impl, r.status) for r in report] == [("correct", Status.PASS)]


def test_python_api_rich_rendering():
    from rich.console import Console

    report = cnncheck.gradcheck("relu", impl="numpy")
    console = Console(record=True, width=160)
    console.print(report)
    text = console.export_text()
    assert "relu" in text and "numpy" in text and "PASSED" in text


def test_python_api_rejects_unknown_parameters_and_names():
    with pytest.raises(CnnCheckError, match="unknown parameter 'strides'"):
        cnncheck.gradcheck("conv", strides=2)
    with pytest.raises(CnnCheckError, match="unknown layer 'convv'.*did you mean 'conv'"):
        cnncheck.gradcheck("convv")
    with pytest.raises(CnnCheckError, match="--pool-height does not apply to conv"):
        cnncheck.gradcheck("conv", pool_height=2)


def test_allow_missing_lets_not_implemented_pass():
    report = cnncheck.gradcheck("relu", module=FIXTURES / "skeleton.py", entry_points=False)
    assert not report.passed
    report = cnncheck.gradcheck("relu", module=FIXTURES / "skeleton.py", entry_points=False, allow_missing=True)
    assert report.passed
