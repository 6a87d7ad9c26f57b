"""The specs of the normalisation, dropout, loss and sandwich layers, and the default check on their built-ins.

Spec facts (the course's names and defaults, the battery's geometries, the
input generators, parameter validation, the dropout and SVM judges) are
checked directly and cheaply; then the default ``gradcheck`` of each layer
runs once on every built-in implementation, torch included when installed.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from cnncheck import api, catalog
from cnncheck.catalog import dropout as dropout_spec
from cnncheck.catalog import svm_loss as svm_spec
from cnncheck.errors import CnnCheckError
from cnncheck.layers import dropout as dropout_layer
from cnncheck.layers import losses

NEW = ("batchnorm", "layernorm", "spatial_batchnorm", "spatial_groupnorm", "dropout", "softmax_loss", "svm_loss",
       "affine_relu", "conv_relu", "conv_relu_pool", "affine_bn_relu", "affine_ln_relu")
HAS_TORCH = importlib.util.find_spec("torch") is not None


def spec(name):
    return catalog.spec(name)


def test_the_catalogue_lists_the_four_basic_layers_then_the_new_ones():
    assert [s.name for s in catalog.specs()][:len(catalog.MODULES)] == ["affine", "relu", "conv", "pool", *NEW]


@pytest.mark.parametrize("name,defaults", [
    ("batchnorm", {"shape": (4, 5), "mode": "train", "eps": 1e-5, "momentum": 0.9}),
    ("layernorm", {"shape": (4, 5), "eps": 1e-5}),
    ("spatial_batchnorm", {"shape": (2, 3, 4, 5), "mode": "train", "eps": 1e-5, "momentum": 0.9}),
    ("spatial_groupnorm", {"shape": (2, 6, 4, 5), "G": 2, "eps": 1e-5}),
    ("dropout", {"shape": (10, 10), "p": 0.2, "mode": "train", "seed": 123}),
    ("softmax_loss", {"shape": (50, 10), "scale": 1e-3, "offset": 0.0}),
    ("svm_loss", {"shape": (50, 10), "scale": 1e-3}),
    ("affine_relu", {"shape": (2, 3, 4), "filters": 10}),
    ("conv_relu", {"shape": (2, 3, 8, 8), "filters": 3, "kernel": (3, 3), "stride": 1, "pad": 1}),
    ("conv_relu_pool", {"shape": (2, 3, 16, 16), "filters": 3, "kernel": (3, 3), "stride": 1, "pad": 1,
                        "pool_height": 2, "pool_width": 2, "pool_stride": 2}),
])
def test_defaults_are_the_course_notebooks(name, defaults):
    assert spec(name).resolve({}) == defaults
    assert spec(name).geometries[0].label == "notebook" and spec(name).geometries[0].params == {}


def test_bench_defaults_are_the_notebooks_timing_sizes():
    assert spec("batchnorm").resolve({}, purpose="bench")["shape"] == (100, 500)
    assert spec("dropout").resolve({}, purpose="bench")["shape"] == (500, 500)
    assert spec("conv_relu").output_shape(spec("conv_relu").resolve({}, purpose="bench")) == (100, 25, 16, 16)


def test_call_conventions():
    bn = spec("batchnorm")
    assert bn.functions == {"": ("batchnorm_forward", "batchnorm_backward"),
                            "alt": ("batchnorm_forward", "batchnorm_backward_alt")}
    assert bn.grads == ("x", "gamma", "beta") and bn.state == ("running_mean", "running_var")
    assert [i.role for i in bn.inputs] == ["grad", "grad", "grad", "config"]
    assert [i.role for i in spec("spatial_groupnorm").inputs] == ["grad", "grad", "grad", "const", "config"]
    for name in ("softmax_loss", "svm_loss"):
        assert spec(name).protocol == "loss" and spec(name).grads == ("x",)
        assert [i.role for i in spec(name).inputs] == ["grad", "data"]
        assert spec(name).functions == {"": (name, "")} and spec(name).output_shape(spec(name).resolve({})) == ()
    assert spec("affine_bn_relu").grads == ("x", "w", "b", "gamma", "beta")
    assert spec("conv_relu_pool").functions == {"": ("conv_relu_pool_forward", "conv_relu_pool_backward")}
    for name in ("affine_relu", "conv_relu", "conv_relu_pool", "affine_bn_relu", "affine_ln_relu"):
        assert spec(name).kinks and spec(name).has_kinks
    assert spec("dropout").reference is None and spec("dropout").subgradient is not None
    assert not spec("batchnorm").has_kinks and not spec("softmax_loss").has_kinks
    # Parameters whose flag a command already has (--mode, --eps, --seed), or that reads as -p, are -p only.
    for name in NEW:
        for param in spec(name).params:
            if param.name in ("mode", "eps", "seed", "p"):
                assert not param.option, (name, param.name)


@pytest.mark.parametrize("name", NEW)
def test_every_spec_names_a_reference_among_its_builtins_and_a_torch_oracle(name):
    s = spec(name)
    names = [b.name for b in s.impls]
    assert s.reference is None or s.reference in names
    torch = [b for b in s.impls if b.name == "torch"]
    assert len(torch) == 1 and torch[0].requires == "torch" and "torch_extra" in torch[0].forward


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_geometry_builds_inputs_of_the_declared_shapes(name, dtype):
    s = spec(name)
    for geometry, params in s.battery():
        sample = s.make_sample(params, np.random.default_rng(3), dtype, 1e-4)
        again = s.make_sample(params, np.random.default_rng(3), dtype, 1e-4)
        shapes = s.shapes(params)
        for inp in s.inputs:
            value = sample.values[inp.name]
            if inp.role == "grad":
                assert value.shape == shapes[inp.name] and value.dtype == dtype, (geometry.label, inp.name)
                assert np.array_equal(value, again.values[inp.name])
            elif inp.role == "data":
                assert value.shape == shapes[inp.name] and np.issubdtype(value.dtype, np.integer)
            elif inp.role == "const":
                assert value == params[inp.name]
            else:
                assert isinstance(value, dict)
        if s.protocol == "loss":
            assert sample.dout is None
        else:
            assert sample.dout.shape == tuple(s.output_shape(params)) == shapes["out"]
        assert s.n_grad_elements(params) > 0


def test_the_batteries_cover_both_modes_and_a_batch_of_one():
    for name in NEW:
        battery = spec(name).battery()
        assert any(p["shape"][0] == 1 for _, p in battery), name
        if "mode" in spec(name).param_names and name != "affine_bn_relu":
            assert {p["mode"] for _, p in battery} == {"train", "test"}, name
    labels = {name: [g.label for g in spec(name).geometries] for name in NEW}
    assert labels["batchnorm"] == ["notebook", "tall", "eps", "test", "single"]
    groups = [(p["shape"][1], p["G"]) for _, p in spec("spatial_groupnorm").battery()]
    assert {G for _, G in groups} == {1, 2, 3, 5} and all(C % G == 0 for C, G in groups)
    assert any(C // G != G and G > 1 for C, G in groups)


def test_normalisation_inputs_carry_every_parameter_and_plausible_running_statistics():
    s = spec("batchnorm")
    params = s.resolve({"mode": "test", "eps": 0.1, "momentum": 0.5})
    bn_param = s.make_sample(params, np.random.default_rng(0)).values["bn_param"]
    assert {k: bn_param[k] for k in ("mode", "eps", "momentum")} == {"mode": "test", "eps": 0.1, "momentum": 0.5}
    assert bn_param["running_mean"].shape == bn_param["running_var"].shape == (5,)
    assert np.all(bn_param["running_var"] > 0)
    x = s.make_sample(s.resolve({"shape": (200, 3)}), np.random.default_rng(0)).values["x"]
    assert np.all(x.mean(axis=0) > 5) and np.ptp(x.std(axis=0)) > 0.1   # a mean and a scale per feature
    gn = spec("spatial_groupnorm").make_sample(spec("spatial_groupnorm").resolve({}), np.random.default_rng(0))
    assert gn.values["G"] == 2 and gn.values["gn_param"] == {"eps": 1e-5}


def test_svm_scores_keep_their_margins_away_from_the_kink():
    s = spec("svm_loss")
    for _, params in s.battery():
        sample = s.make_sample(params, np.random.default_rng(5), np.float64, 1e-4)
        x, y = sample.values["x"], sample.values["y"]
        m = x - x[np.arange(len(y)), y][:, None] + 1
        m[np.arange(len(y)), y] = np.inf
        assert np.abs(m).min() >= 1e-4
    kinks = s.make_sample(s.resolve({"shape": (8, 5)}), np.random.default_rng(5), np.float64, 0.0, kinks=True)
    x, y = kinks.values["x"], kinks.values["y"]
    m = x - x[np.arange(8), y][:, None] + 1
    m[np.arange(8), y] = np.inf
    assert (m == 0).sum() >= 4   # exact kinks


def test_the_large_softmax_geometry_overflows_an_unshifted_exp():
    s = spec("softmax_loss")
    params = next(p for g, p in s.battery() if g.label == "large")
    x = s.make_sample(params, np.random.default_rng(0)).values["x"]
    assert x.max() > math.log(np.finfo(np.float64).max)


@pytest.mark.parametrize("name,overrides,fragment", [
    ("batchnorm", {"eps": 0}, "batchnorm eps must be > 0"),
    ("batchnorm", {"shape": (2, 3, 4)}, "must have 2 sizes"),
    ("batchnorm", {"momentum": 1.5}, "momentum must be <= 1"),
    ("spatial_groupnorm", {"G": 4}, "G must divide the channels C = 6, got G = 4; use one of 1, 2, 3, 6"),
    ("spatial_batchnorm", {"shape": (1, 3, 1, 1)}, "needs more than one value per channel"),
    ("dropout", {"p": 0}, "probability of keeping a unit and must be in (0, 1]"),
    ("dropout", {"seed": "none"}, "dropout seed must be set"),
    ("dropout", {"mode": "eval"}, "mode must be one of train, test"),
    ("conv_relu_pool", {"shape": (1, 1, 3, 3), "kernel": (3, 3), "pad": 0}, "larger than the convolution's output"),
    ("affine_bn_relu", {"shape": (1, 4), "mode": "train"}, "needs N > 1"),
])
def test_invalid_parameters_are_refused_with_the_layer_and_the_fix(name, overrides, fragment):
    with pytest.raises(CnnCheckError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        spec(name).resolve(overrides)


# -- the judges at the subgradient step ------------------------------------------------------------
def dropout_case(**overrides):
    s = spec("dropout")
    params = s.resolve({"shape": (40, 50), "p": 0.3, **overrides})
    sample = s.make_sample(params, np.random.default_rng(2))
    out, cache = dropout_layer.dropout_forward(sample.values["x"], dict(sample.values["dropout_param"]))
    return params, sample, dropout_layer.dropout_backward(sample.dout, cache)


def test_the_dropout_judge_accepts_inverted_dropout_and_names_each_mistake():
    params, sample, dx = dropout_case()
    assert dropout_spec.law(sample, params, [dx]) is None
    assert "dx = dout where inverted dropout gives dx = dout / p" in dropout_spec.law(sample, params, [dx * 0.3])
    mask = np.random.default_rng(0).random(dx.shape) >= 0.3
    assert "instead of 1/p" in dropout_spec.law(sample, params, [sample.dout * mask / 0.7])
    message = dropout_spec.law(sample, params, [sample.dout * mask / 0.3])
    assert "kept (" in message and "drops units with probability p instead of keeping them" in message
    params, sample, dx = dropout_case(mode="test")
    assert np.array_equal(dx, sample.dout) and dropout_spec.law(sample, params, [dx]) is None
    assert "in test mode dropout is the identity" in dropout_spec.law(sample, params, [dx * 0.3])


def test_the_svm_judge_accepts_any_share_at_a_zero_margin_and_nothing_else():
    s = spec("svm_loss")
    params = s.resolve({"shape": (8, 5)})
    sample = s.make_sample(params, np.random.default_rng(5), np.float64, 0.0, kinks=True)
    x, y = sample.values["x"], sample.values["y"]
    _, dx = losses.svm_loss(x, y)
    assert svm_spec.subgradient(sample, params, [dx]) is None
    rows = np.arange(8)
    m = x - x[rows, y][:, None] + 1
    m[rows, y] = -1
    counted = (m >= 0).astype(float)               # zero margins counted as positive: valid too
    counted[rows, y] = -counted.sum(axis=1)
    assert svm_spec.subgradient(sample, params, [counted / 8]) is None
    assert "a positive margin adds 1/N" in svm_spec.subgradient(sample, params, [counted / 4])
    wrong = dx.copy()
    wrong[rows, y] = 0
    assert "loses what the other scores gain" in svm_spec.subgradient(sample, params, [wrong])


# -- the default check on the built-in implementations -----------------------------------------------
def builtin_cases():
    for name in NEW:
        impls = [b.name for b in spec(name).impls if not b.requires or HAS_TORCH]
        yield pytest.param(name, impls, id=name)


@pytest.mark.parametrize("name,impls", list(builtin_cases()))
def test_the_default_check_passes_on_every_builtin(name, impls):
    report = api.gradcheck(name, impls)
    problems = [(r.impl, r.kind, r.subject, r.geometry, r.message) for r in report.results
                if r.fails(strict=False, allow_missing=False)]
    assert report.passed and not problems, problems
    assert {r.impl for r in report.results} == set(impls)
    assert {r.geometry for r in report.results if r.geometry} == {g.label for g in spec(name).geometries}
