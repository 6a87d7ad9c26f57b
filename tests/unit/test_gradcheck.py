"""The battery: each check exists to catch a bug, and must not fail a correct layer written another way.

Implementations here are small functions run in this process (a LocalSession);
the corpus test runs whole files through the command line.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck import catalog, gradcheck, loading
from cnncheck.errors import CnnCheckError
from cnncheck.layers import naive
from cnncheck.results import GradcheckReport
from cnncheck.session import LocalSession
from cnncheck.specs import Geometry, Sample
from cnncheck.status import Status

REGISTRY = loading.builtin_registry()
_FUNCTIONS = {k: v for layer in REGISTRY.layer_names() for impl in REGISTRY.impls(layer)
              for k, v in impl.functions.items()}


def run(layer, forward, backward, *, battery=None, sample=None, **config):
    """Results of the default battery on one implementation made of two functions."""
    spec = catalog.spec(layer)
    impl = loading.function_impl(layer, "mine", forward, backward, "user", "test")
    references = gradcheck.References(REGISTRY, LocalSession(_FUNCTIONS))
    with gradcheck.single_threaded():
        return gradcheck.check(spec, impl, LocalSession(dict(impl.functions)), battery=battery,
                               config=gradcheck.GradcheckConfig(**config), references=references, sample=sample)


def failing(results, strict=False):
    return [r for r in results if r.fails(strict=strict)]


def first(results, strict=False):
    found = failing(results, strict)
    assert found, "expected a failure"
    return found[0]


# -- every built-in implementation passes ---------------------------------------------------------------
@pytest.mark.parametrize("layer, impl", [(s.name, i.name) for s in REGISTRY.layers() for i in REGISTRY.impls(s.name)])
def test_builtin_implementations_pass_the_default_battery(layer, impl):
    spec = REGISTRY.layer(layer)
    chosen = REGISTRY.impl(layer, impl)
    references = gradcheck.References(REGISTRY, LocalSession(_FUNCTIONS))
    with gradcheck.single_threaded():
        results = gradcheck.check(spec, chosen, LocalSession(dict(chosen.functions)), references=references)
    assert not failing(results, strict=True), [r.message for r in failing(results, strict=True)]
    geometries = {r.geometry for r in results if r.geometry}
    assert geometries == {g.label for g in spec.geometries}
    kinds = {r.kind for r in results}
    assert {"gradient", "protocol"} <= kinds


@pytest.mark.parametrize("layer", ["affine", "relu", "conv", "pool"])
def test_builtin_reference_layers_pass_in_float32(layer):
    spec = REGISTRY.layer(layer)
    impl = REGISTRY.reference(spec)
    results = run(layer, impl.functions[impl.forward], impl.functions[impl.backward], dtype="float32")
    assert not failing(results), [r.message for r in failing(results)]


# -- geometry bugs ----------------------------------------------------------------------------------------
def _conv_width_from_HH(x, w, b, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = 1 + (H + 2 * p - HH) // s, 1 + (W + 2 * p - HH) // s
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((N, F, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = np.tensordot(xp[:, :, i * s:i * s + HH, j * s:j * s + WW], w, ([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def test_a_bug_invisible_at_the_notebook_geometry_fails_at_another():
    result = first(run("conv", _conv_width_from_HH, naive.conv_backward_naive))
    assert result.status == Status.ERROR and result.geometry == "pad0"
    assert result.message == "out has shape (2, 3, 3, 5), expected (2, 3, 3, 6)"
    assert "x (2, 4, 5, 7), w (3, 4, 3, 2)" in result.where


def test_an_empty_slice_at_pad_zero_is_named():
    def backward(dout, cache):
        dx, dw, db = naive.conv_backward_naive(dout, cache)
        x, w, b, conv_param = cache
        pad = conv_param["pad"]
        dx_pad = np.pad(dx, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        return dx_pad[:, :, pad:-pad, pad:-pad], dw, db

    result = first(run("conv", naive.conv_forward_naive, backward))
    assert result.geometry == "pad0" and result.subject == "dx"
    assert "has shape (2, 4, 0, 0), expected (2, 4, 5, 7) (it is empty" in result.message


# -- wrong forward, matching backward --------------------------------------------------------------------
def test_a_wrong_forward_with_a_matching_backward_differs_from_the_reference():
    def forward(x):
        return np.where(x > 0, x, 0.01 * x), x

    def backward(dout, x):
        return np.where(x > 0, dout, 0.01 * dout)

    result = first(run("relu", forward, backward))
    assert result.status == Status.DIFFERS and result.kind == "reference" and result.subject == "out"
    assert result.message.startswith("forward output differs from the reference: max |diff|")


def test_no_reference_skips_the_comparison():
    def forward(x):
        return np.where(x > 0, x, 0.01 * x), x

    def backward(dout, x):
        return np.where(x > 0, dout, 0.01 * dout)

    results = run("relu", forward, backward, reference=False)
    assert not any(r.kind == "reference" for r in results)


def test_a_forward_that_ignores_its_input_is_blamed_on_forward():
    memo = {}

    def forward(x):
        if id(x) not in memo:
            memo[id(x)] = np.maximum(x, 0)
        return memo[id(x)].copy(), x

    result = next(r for r in run("relu", forward, naive.relu_backward) if r.finding == "ignores-input")
    assert result.kind == "forward" and result.status == Status.FAIL
    assert "forward output did not change when x was perturbed" in result.message


def test_float32_inside_a_float64_check_says_so():
    def forward(x, w, b):
        out = x.reshape(x.shape[0], -1).astype(np.float32) @ w.astype(np.float32) + b.astype(np.float32)
        return out.astype(np.float64), (x, w, b)

    results = run("affine", forward, naive.affine_backward)
    precision = [r for r in results if r.finding == "float32-precision"]
    assert precision and "--dtype float32" in precision[0].message


# -- the call protocol -------------------------------------------------------------------------------------
def test_state_kept_between_backward_calls():
    total = {}

    def backward(dout, cache):
        dx, dw, db = naive.affine_backward(dout, cache)
        key = dw.shape
        total[key] = total.get(key, 0) + dw
        return dx, total[key], db

    result = first(run("affine", naive.affine_forward, backward))
    assert result.finding == "repeat-backward" and result.subject == "dw"


def test_a_returned_buffer_reused_by_the_next_call():
    buffers = {}

    def backward(dout, cache):
        x, pool_param = cache
        dx = buffers.setdefault(x.shape, np.zeros(x.shape))
        dx[...] = naive.max_pool_backward_naive(dout, cache)
        return dx

    result = first(run("pool", naive.max_pool_forward_naive, backward))
    assert result.finding == "reused-output"


def test_a_cache_shared_between_calls():
    last = {}

    def forward(x):
        last["x"] = x
        return np.maximum(x, 0), None

    def backward(dout, cache):
        return dout * (last["x"] > 0)

    assert first(run("relu", forward, backward)).finding == "shared-cache"


def test_state_kept_from_an_earlier_call_of_the_same_shape():
    kept = {}

    def backward(dout, cache):
        x, w, b = cache
        if w.shape not in kept:
            kept[w.shape] = w.T.copy()
        dx = (dout @ kept[w.shape]).reshape(x.shape)
        _, dw, db = naive.affine_backward(dout, cache)
        return dx, dw, db

    result = first(run("affine", naive.affine_forward, backward))
    assert result.finding == "stale-state" and result.subject == "dx"


def test_writing_into_the_callers_param_dict():
    def forward(x, w, b, conv_param):
        out, cache = naive.conv_forward_naive(x, w, b, conv_param)
        conv_param["H_out"] = out.shape[2]
        return out, cache

    result = first(run("conv", forward, naive.conv_backward_naive))
    assert result.finding == "modifies-param" and "added 'H_out'" in result.message


def test_strides_computed_from_the_shape_fail_on_other_layouts():
    def forward(x, pool_param):
        ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
        N, C, H, W = x.shape
        H_out, W_out = 1 + (H - ph) // s, 1 + (W - pw) // s
        item = x.itemsize
        strides = (C * H * W * item, H * W * item, s * W * item, s * item, W * item, item)
        windows = np.lib.stride_tricks.as_strided(x, (N, C, H_out, W_out, ph, pw), strides)
        return windows.max(axis=(4, 5)), (x, pool_param)

    result = first(run("pool", forward, naive.max_pool_backward_naive))
    assert result.finding == "layout"


def test_a_nondeterministic_forward():
    def forward(x):
        return np.maximum(x, 0) + 1e-3 * np.random.standard_normal(x.shape), x

    results = run("relu", forward, naive.relu_backward)
    assert any(r.finding == "nondeterministic-forward" and r.status == Status.FAIL for r in results)


# -- warnings: reported, computed anyway, failing only with --strict ------------------------------------
def test_writing_into_dout_is_a_warning_with_the_gradient_still_checked():
    def backward(dout, x):
        dx = dout
        dx[x <= 0] = 0
        return dx

    results = run("relu", naive.relu_forward, backward)
    assert not failing(results)
    warning = next(r for r in results if r.finding == "mutates-dout")
    assert warning.status == Status.WARNING and "two branches" in warning.message
    assert any(r.kind == "gradient" and r.status == Status.PASS for r in results)
    assert GradcheckReport(tuple(results), strict=True).passed is False


def test_float64_allocation_for_float32_input_is_a_warning():
    def backward(dout, x):
        dx = np.zeros(x.shape)
        dx[x > 0] = dout[x > 0]
        return dx

    results = run("relu", naive.relu_forward, backward, dtype="float32")
    assert not failing(results)
    assert any(r.finding == "upcasts" and r.status == Status.WARNING for r in results)


def test_a_masked_array_is_read_as_data_with_a_warning():
    def forward(x):
        return np.ma.masked_less(x, 0), x

    results = run("relu", forward, naive.relu_backward)
    assert any(r.finding == "returns-subclass" and "masked entries" in r.message for r in results)
    assert first(results).status == Status.DIFFERS


# -- ties and kinks -----------------------------------------------------------------------------------------
def test_routing_to_every_tied_maximum_violates_conservation():
    def backward(dout, cache):
        x, pool_param = cache
        ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
        dx = np.zeros_like(x)
        for i in range(dout.shape[2]):
            for j in range(dout.shape[3]):
                window = x[:, :, i * s:i * s + ph, j * s:j * s + pw]
                top = window == window.max(axis=(2, 3), keepdims=True)
                dx[:, :, i * s:i * s + ph, j * s:j * s + pw] += top * dout[:, :, i:i + 1, j:j + 1]
        return dx

    result = next(r for r in run("pool", naive.max_pool_forward_naive, backward) if r.kind == "subgradient"
                  and r.fails())
    assert "tied maxima" in result.message and "never to each tied maximum in full" in result.message


def test_splitting_ties_is_a_valid_subgradient():
    def backward(dout, cache):
        x, pool_param = cache
        ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
        dx = np.zeros_like(x)
        for i in range(dout.shape[2]):
            for j in range(dout.shape[3]):
                window = x[:, :, i * s:i * s + ph, j * s:j * s + pw]
                top = window == window.max(axis=(2, 3), keepdims=True)
                share = top / top.sum(axis=(2, 3), keepdims=True)
                dx[:, :, i * s:i * s + ph, j * s:j * s + pw] += share * dout[:, :, i:i + 1, j:j + 1]
        return dx

    assert not failing(run("pool", naive.max_pool_forward_naive, backward))


def test_relu_at_zero_may_pass_any_share_of_dout():
    def backward(dout, x):
        return np.where(x > 0, dout, np.where(x == 0, 0.5 * dout, 0.0))

    assert not failing(run("relu", naive.relu_forward, backward))


def test_a_sample_on_a_kink_is_recognised_not_held_against_the_gradient():
    spec = catalog.spec("relu")
    x = np.array([[0.0, 1.0, -1.0]])
    sample = Sample({"x": x}, np.array([[1.0, 2.0, 3.0]]))
    params = spec.resolve({"shape": (1, 3)})
    results = run("relu", naive.relu_forward, naive.relu_backward, sample=sample,
                  battery=[(Geometry("custom", {"shape": (1, 3)}), params)], protocol=False)
    gradient = next(r for r in results if r.kind == "gradient")
    assert gradient.status == Status.PASS and "sit on kinks" in gradient.message


# -- uneven sizes ---------------------------------------------------------------------------------------------
def test_refusing_uneven_sizes_with_assert_is_allowed():
    def forward(x, w, b, conv_param):
        H, W = x.shape[2:]
        HH, WW = w.shape[2:]
        s, p = conv_param["stride"], conv_param["pad"]
        assert (H + 2 * p - HH) % s == 0 and (W + 2 * p - WW) % s == 0, "sizes do not work"
        return naive.conv_forward_naive(x, w, b, conv_param)

    results = run("conv", forward, naive.conv_backward_naive)
    assert not failing(results)
    assert any(r.finding == "uneven" and r.geometry == "floor" for r in results)


def test_a_round_instead_of_floor_fails_at_the_uneven_geometry():
    def forward(x, w, b, conv_param):
        s, p = conv_param["stride"], conv_param["pad"]
        N, C, H, W = x.shape
        F, _, HH, WW = w.shape
        H_out, W_out = 1 + round((H + 2 * p - HH) / s), 1 + round((W + 2 * p - WW) / s)
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        out = np.zeros((N, F, H_out, W_out))
        for i in range(H_out):
            for j in range(W_out):
                window = xp[:, :, i * s:i * s + HH, j * s:j * s + WW]
                out[:, :, i, j] = np.tensordot(window, w, ([1, 2, 3], [1, 2, 3])) + b
        return out, (x, w, b, conv_param)

    result = first(run("conv", forward, naive.conv_backward_naive))
    assert result.geometry == "floor" and result.status == Status.ERROR


# -- what code under test returns --------------------------------------------------------------------------
@pytest.mark.parametrize("forward, status, message", [
    (lambda x: None, Status.NOT_IMPLEMENTED, "forward returned None"),
    (lambda x: np.maximum(x, 0), Status.ERROR, "forward returned numpy.ndarray, expected a tuple (out, cache)"),
    (lambda x: (np.maximum(x, 0).astype(np.int64), x), Status.ERROR, "out has dtype int64, expected float64"),
    (lambda x: (np.maximum(x, 0).astype(complex), x), Status.ERROR, "out has dtype complex128, expected float64"),
    (lambda x: (np.full(x.shape, np.nan), x), Status.ERROR, "out contains NaN (first at out[0, 0, 0, 0])"),
    (lambda x: (np.maximum(x, 0).ravel(), x), Status.ERROR, "out has shape (4,), expected (1, 1, 2, 2)"),
    (lambda x: ({"out": x}, x), Status.ERROR, "out is a dict, expected an ndarray"),
])
def test_returned_values_become_statuses(forward, status, message):
    result = first(run("relu", forward, naive.relu_backward))
    assert result.status == status and result.message == message


def test_sys_exit_and_raise_become_errors():
    import sys

    def forward(x):
        sys.exit(7)

    result = first(run("relu", forward, naive.relu_backward))
    assert result.status == Status.ERROR and result.message == "forward called sys.exit(7)"


def test_list_returns_are_accepted():
    def forward(x, w, b):
        out, cache = naive.affine_forward(x, w, b)
        return [out, cache]

    def backward(dout, cache):
        return list(naive.affine_backward(dout, cache))

    assert not failing(run("affine", forward, backward))


def test_a_missing_implementation_is_not_implemented_everywhere():
    spec = catalog.spec("conv")
    impl = loading.function_impl("conv", "mine", naive.conv_forward_naive, None)
    impl = type(impl)(**{**impl.__dict__, "missing": "layers.py does not define conv_backward_naive"})
    results = gradcheck.check(spec, impl, LocalSession())
    assert {r.subject for r in results} == {"out", "dx", "dw", "db"}
    assert all(r.status == Status.NOT_IMPLEMENTED for r in results)


# -- large inputs: directions and sampled elements ---------------------------------------------------------
def test_a_single_wrong_corner_element_is_caught_above_the_full_limit():
    def backward(dout, cache):
        dx, dw, db = naive.affine_backward(dout, cache)
        dx = dx.copy()
        dx[-1, -1] += 1.0
        return dx, dw, db

    spec = catalog.spec("affine")
    params = spec.resolve({"shape": (40, 200), "filters": 3})
    results = run("affine", naive.affine_forward, backward, battery=[(Geometry("custom", {}), params)],
                  reference=False, protocol=False)
    gradient = next(r for r in results if r.kind == "gradient" and r.subject == "dx")
    assert gradient.status == Status.FAIL and gradient.mode == "directional+sample"
    assert gradient.worst_index == (39, 199)


# -- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "everything"}, "mode must be one of"),
    ({"dtype": "float16"}, "dtype must be float64 or float32"),
    ({"samples": 0}, "samples must be a positive integer"),
    ({"eps": -1.0}, "eps must be a positive number"),
    ({"seed": -3}, "seed must be a non-negative integer"),
])
def test_bad_configuration_is_a_value_error(kwargs, message):
    with pytest.raises(CnnCheckError, match=message):
        gradcheck.GradcheckConfig(**kwargs)


def test_a_custom_geometry_replaces_the_battery():
    spec = catalog.spec("conv")
    battery = spec.battery({"stride": 1})
    assert [g.label for g, _ in battery] == ["custom"]
    assert battery[0][1]["stride"] == 1 and battery[0][1]["shape"] == (4, 3, 5, 5)
