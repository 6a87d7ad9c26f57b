"""cnncheck.layers.models: parameters, initial loss, every gradient against centred differences, reg, modes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cnncheck.errors import CnnCheckError
from cnncheck.gradient_check import eval_numerical_gradient
from cnncheck.layers.models import FullyConnectedNet, ThreeLayerConvNet

# Centred differences (h = 1e-5) of losses between 1 and 25 carry an absolute error below
# 5e-10 (measured), so gradients are compared with an absolute floor of 2e-9.
GRAD_TOL = {"rtol": 1e-7, "atol": 2e-9}


def small_convnet(reg=0.0, dtype=np.float64, seed=0, **kw):
    np.random.seed(seed)
    args = dict(input_dim=(2, 6, 6), num_filters=3, filter_size=3, hidden_dim=5, num_classes=4, weight_scale=1e-1)
    args.update(kw)
    return ThreeLayerConvNet(reg=reg, dtype=dtype, **args)


def small_fcnet(normalization=None, keep=1, reg=0.0, dtype=np.float64, seed=0, **kw):
    np.random.seed(seed)
    args = dict(input_dim=6, num_classes=3, weight_scale=5e-1)
    args.update(kw)
    return FullyConnectedNet([5, 4], dropout_keep_ratio=keep, normalization=normalization, reg=reg, dtype=dtype,
                             seed=3, **args)


def away_from_kinks(model, rng):
    """Random biases, betas and gammas: zero biases put whole rows exactly on relu's kink."""
    for name, value in model.params.items():
        if name[0] == "b":  # b1.., beta1..
            value[...] = 0.1 * rng.standard_normal(value.shape)
        elif name.startswith("gamma"):
            value[...] = 1 + 0.1 * rng.standard_normal(value.shape)
    return model


def assert_grads_match(model, X, y):
    loss, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name, param in model.params.items():
        assert grads[name].shape == param.shape and grads[name].dtype == param.dtype, name
        numeric = eval_numerical_gradient(lambda _: model.loss(X, y)[0], param)
        np.testing.assert_allclose(grads[name], numeric, **GRAD_TOL, err_msg=name)
    return loss, grads


# -- ThreeLayerConvNet ---------------------------------------------------------------------------
def test_convnet_parameters_follow_the_course():
    np.random.seed(0)
    model = ThreeLayerConvNet()
    shapes = {name: p.shape for name, p in model.params.items()}
    assert shapes == {"W1": (32, 3, 7, 7), "b1": (32,), "W2": (32 * 16 * 16, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert model.reg == 0.0
    for name in ("b1", "b2", "b3"):
        assert not model.params[name].any()
    assert model.params["W1"].std() == pytest.approx(1e-3, rel=0.05)


def test_convnet_even_filter_size_and_odd_image_size():
    model = small_convnet(input_dim=(1, 7, 5), filter_size=4)  # pad 1: conv 6 x 4, pool 3 x 2
    assert model.params["W2"].shape == (3 * 3 * 2, 5)
    assert model.loss(np.zeros((2, 1, 7, 5))).shape == (2, 4)


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_convnet_gradients_match_centred_differences(rng, reg):
    model = away_from_kinks(small_convnet(reg=reg), rng)
    X, y = rng.standard_normal((2, 2, 6, 6)), rng.integers(0, 4, 2)
    assert_grads_match(model, X, y)


@pytest.mark.parametrize("factory", [
    lambda: ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, hidden_dim=10, weight_scale=1e-3),
    lambda: FullyConnectedNet([20, 10], input_dim=30, weight_scale=1e-3),
    lambda: FullyConnectedNet([20, 10], input_dim=30, weight_scale=1e-3, normalization="batchnorm"),
    lambda: FullyConnectedNet([20, 10], input_dim=30, weight_scale=1e-3, normalization="layernorm",
                              dropout_keep_ratio=0.5, seed=1),
], ids=["convnet", "fcnet", "fcnet-batchnorm", "fcnet-layernorm-dropout"])
def test_initial_loss_is_near_log_num_classes(rng, factory):
    np.random.seed(1)
    model = factory()
    shape = (8, 3, 8, 8) if isinstance(model, ThreeLayerConvNet) else (8, 30)
    X, y = rng.standard_normal(shape), rng.integers(0, 10, 8)
    loss, _ = model.loss(X, y)
    # small weights give near-uniform scores: the loss is log C to well within 1e-2
    assert loss == pytest.approx(np.log(10), abs=1e-2)


@pytest.mark.parametrize("make", [small_convnet, small_fcnet], ids=["convnet", "fcnet"])
def test_reg_adds_half_reg_sum_of_squared_weights(rng, make):
    plain, regularised = make(reg=0.0), make(reg=2.5)
    away_from_kinks(plain, rng)
    regularised.params = {k: v.copy() for k, v in plain.params.items()}
    shape = (3, 2, 6, 6) if make is small_convnet else (3, 6)
    X, y = rng.standard_normal(shape), rng.integers(0, 3, 3)
    loss0, grads0 = plain.loss(X, y)
    loss1, grads1 = regularised.loss(X, y)
    weights = [k for k in plain.params if k[0] == "W"]
    penalty = 0.5 * 2.5 * sum(np.sum(plain.params[k] ** 2) for k in weights)
    assert loss1 == pytest.approx(loss0 + penalty, rel=1e-12)
    for k in plain.params:  # reg * W on the weights, nothing on the biases
        extra = 2.5 * plain.params[k] if k in weights else 0.0
        np.testing.assert_allclose(grads1[k], grads0[k] + extra, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make,shape", [(small_convnet, (3, 2, 6, 6)), (small_fcnet, (3, 2, 3))],
                         ids=["convnet", "fcnet"])
def test_scores_without_labels_and_input_untouched(rng, make, shape):
    model = make()
    X = rng.standard_normal(shape)
    X.flags.writeable = False
    before = X.copy()
    scores = model.loss(X)
    assert scores.shape == (3, 4 if make is small_convnet else 3)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(model.loss(X), scores)  # test mode is deterministic


@pytest.mark.parametrize("make,shape", [(small_convnet, (2, 2, 6, 6)), (small_fcnet, (2, 6))],
                         ids=["convnet", "fcnet"])
def test_float32_models_compute_in_float32(rng, make, shape):
    model = make(dtype=np.float32)
    X = rng.standard_normal(shape)  # float64 input is cast to the model's dtype
    loss, grads = model.loss(X, np.array([0, 1]))
    assert isinstance(loss, float)
    assert model.loss(X).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


# -- FullyConnectedNet ----------------------------------------------------------------------------
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_fcnet_parameters_follow_the_course(normalization):
    np.random.seed(0)
    model = FullyConnectedNet([7, 6, 5], input_dim=8, num_classes=4, normalization=normalization)
    expected = {"W1": (8, 7), "b1": (7,), "W2": (7, 6), "b2": (6,), "W3": (6, 5), "b3": (5,),
                "W4": (5, 4), "b4": (4,)}
    if normalization:
        expected.update({"gamma1": (7,), "beta1": (7,), "gamma2": (6,), "beta2": (6,),
                         "gamma3": (5,), "beta3": (5,)})
    assert {k: v.shape for k, v in model.params.items()} == expected
    assert model.num_layers == 4 and all(v.dtype == np.float32 for v in model.params.values())
    for k, v in model.params.items():
        if k.startswith("gamma"):
            np.testing.assert_array_equal(v, 1)
        elif k[0] == "b":
            np.testing.assert_array_equal(v, 0)
    assert len(model.bn_params) == (3 if normalization else 0)
    assert not model.use_dropout and model.dropout_param == {}


CONFIGS = list(itertools.product([None, "batchnorm", "layernorm"], [1, 0.7], [0.0, 3.14]))


@pytest.mark.parametrize("normalization,keep,reg", CONFIGS)
def test_fcnet_gradients_match_centred_differences(rng, normalization, keep, reg):
    model = away_from_kinks(small_fcnet(normalization, keep, reg), rng)
    X, y = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
    assert_grads_match(model, X, y)


def test_fcnet_with_batchnorm_b_gradients_vanish(rng):
    """Batchnorm removes any shift its affine layer adds, so the hidden biases get no gradient."""
    model = away_from_kinks(small_fcnet("batchnorm"), rng)
    _, grads = model.loss(rng.standard_normal((4, 6)), rng.integers(0, 3, 4))
    for name in ("b1", "b2"):
        np.testing.assert_allclose(grads[name], 0, atol=1e-14)


def test_fcnet_modes_and_running_statistics(rng):
    model = away_from_kinks(small_fcnet("batchnorm", keep=0.5), rng)
    X, y = rng.standard_normal((6, 6)), rng.integers(0, 3, 6)
    model.loss(X, y)
    assert model.dropout_param["mode"] == "train" and all(p["mode"] == "train" for p in model.bn_params)
    running = [p["running_mean"].copy() for p in model.bn_params]
    assert all(r.any() for r in running)
    scores = model.loss(X)
    assert model.dropout_param["mode"] == "test" and all(p["mode"] == "test" for p in model.bn_params)
    for p, r in zip(model.bn_params, running):  # test mode reads the running statistics only
        np.testing.assert_array_equal(p["running_mean"], r)
    # test mode treats every sample on its own: no batch statistics, no dropout
    np.testing.assert_allclose(model.loss(X[2:3]), scores[2:3], rtol=1e-12)


def test_fcnet_dropout_seed_fixes_the_masks(rng):
    model = away_from_kinks(small_fcnet(keep=0.5), rng)
    X, y = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
    assert model.dropout_param == {"mode": "train", "p": 0.5, "seed": 3}
    assert model.loss(X, y)[0] == model.loss(X, y)[0]


def test_fcnet_without_hidden_layers_is_softmax_regression(rng):
    np.random.seed(0)
    model = FullyConnectedNet([], input_dim=4, num_classes=3, dtype=np.float64)
    X = rng.standard_normal((5, 4))
    np.testing.assert_allclose(model.loss(X), X @ model.params["W1"] + model.params["b1"])
    assert_grads_match(model, X, rng.integers(0, 3, 5))


@pytest.mark.parametrize("call,match", [
    (lambda: FullyConnectedNet([4], normalization="groupnorm"), "normalization"),
    (lambda: FullyConnectedNet([4], dropout_keep_ratio=0), "dropout_keep_ratio"),
    (lambda: FullyConnectedNet([4, 0]), r"hidden_dims\[1\]"),
    (lambda: FullyConnectedNet(4), "hidden_dims"),
    (lambda: FullyConnectedNet([4], reg=-1), "reg"),
    (lambda: FullyConnectedNet([4], dtype=np.int32), "dtype"),
    (lambda: ThreeLayerConvNet(input_dim=(3, 32)), "input_dim"),
    (lambda: ThreeLayerConvNet(input_dim=(3, 1, 1), filter_size=3), "smaller than the 2x2 max pool"),
    (lambda: ThreeLayerConvNet(input_dim=(3, 1, 1), filter_size=2), "larger than the padded input"),
    (lambda: ThreeLayerConvNet(num_filters=0), "num_filters"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(CnnCheckError, match=match):
        call()


def test_bad_labels_raise(rng):
    model = small_fcnet()
    with pytest.raises(CnnCheckError, match="labels"):
        model.loss(rng.standard_normal((2, 6)), np.array([0, 7]))
