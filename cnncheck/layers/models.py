"""The course notebook's whole models: ``ThreeLayerConvNet`` and ``FullyConnectedNet``.

Both keep their learnable arrays in ``model.params`` (a dict from name to
ndarray) and have one method, ``loss(X, y=None)``: without labels it runs
the test-mode forward pass and returns the class scores; with labels it runs
the train-mode forward and backward passes and returns ``(loss, grads)``,
``grads`` holding one array per entry of ``params``, of the same shape.  The
loss is the softmax loss averaged over the batch plus the L2 penalty
``0.5 * reg * sum(W**2)`` over the weights (not the biases, gammas or
betas), whose gradient ``reg * W`` is in ``grads``.

Weights are drawn from numpy's global generator at construction, as in the
course: call ``np.random.seed`` first for reproducible weights.  X is never
modified.  Bad constructor arguments raise
:class:`cnncheck.errors.CnnCheckError` (a ``ValueError``).
"""

from __future__ import annotations

import numbers

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.layers.dropout import dropout_backward, dropout_forward
from cnncheck.layers.losses import softmax_loss
from cnncheck.layers.naive import affine_backward, affine_forward
from cnncheck.layers.sandwich import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_ln_relu_backward,
    affine_ln_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)

NORMALIZATIONS = (None, "batchnorm", "layernorm")


def _positive_int(value, name: str) -> int:
    value = geometry._as_int(value, name)
    if value < 1:
        raise CnnCheckError(f"{name} must be >= 1, got {value}")
    return value


def _non_negative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise CnnCheckError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _float_dtype(dtype) -> type:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise CnnCheckError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
    return dt.type


def _l2(params: dict, names) -> float:
    """``sum(W**2)`` over the named weights, in float64."""
    return float(sum(np.sum(np.square(params[n], dtype=np.float64)) for n in names))


class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    The convolution has ``num_filters`` filters of ``filter_size`` x
    ``filter_size``, stride 1 and zero padding ``(filter_size - 1) // 2``
    (which keeps H and W for odd sizes); the pool has a 2x2 window and
    stride 2.

    Parameters
    ----------
    input_dim : tuple (C, H, W)
        The shape of one input image.
    num_filters : int
    filter_size : int
    hidden_dim : int
        Units of the hidden affine layer.
    num_classes : int
    weight_scale : float
        Standard deviation of the normal weights; biases start at zero.
    reg : float
        L2 regularisation strength, >= 0.
    dtype : np.float32 or np.float64
        dtype of every parameter and of the computation.

    Attributes
    ----------
    params : dict
        'W1' : (num_filters, C, filter_size, filter_size), 'b1' : (num_filters,),
        'W2' : (num_filters * HP * WP, hidden_dim), 'b2' : (hidden_dim,),
        'W3' : (hidden_dim, num_classes), 'b3' : (num_classes,);
        HP and WP are the pooled height and width.
    reg : float
    dtype : type
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100, num_classes=10,
                 weight_scale=1e-3, reg=0.0, dtype=np.float32):
        if not isinstance(input_dim, (tuple, list)) or len(input_dim) != 3:
            raise CnnCheckError(f"input_dim must be (C, H, W), got {input_dim!r}")
        C, H, W = (_positive_int(v, f"input_dim[{i}]") for i, v in enumerate(input_dim))
        num_filters = _positive_int(num_filters, "num_filters")
        filter_size = _positive_int(filter_size, "filter_size")
        hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        num_classes = _positive_int(num_classes, "num_classes")
        weight_scale = _non_negative(weight_scale, "weight_scale")
        self.reg = _non_negative(reg, "reg")
        self.dtype = _float_dtype(dtype)
        self.conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        _, _, H_conv, W_conv = geometry.conv_output_shape(
            (1, C, H, W), (num_filters, C, filter_size, filter_size), 1, self.conv_param["pad"])
        if H_conv < 2 or W_conv < 2:
            raise CnnCheckError(f"input_dim {tuple(input_dim)} with filter_size {filter_size} gives a convolution "
                                f"output of {H_conv}x{W_conv}, smaller than the 2x2 max pool; use larger images")
        _, _, HP, WP = geometry.pool_output_shape((1, num_filters, H_conv, W_conv), 2, 2, 2)
        shapes = {
            "W1": (num_filters, C, filter_size, filter_size), "b1": (num_filters,),
            "W2": (num_filters * HP * WP, hidden_dim), "b2": (hidden_dim,),
            "W3": (hidden_dim, num_classes), "b3": (num_classes,),
        }
        self.params = {}
        for name, shape in shapes.items():
            value = weight_scale * np.random.randn(*shape) if name[0] == "W" else np.zeros(shape)
            self.params[name] = value.astype(self.dtype)

    def loss(self, X, y=None):
        """Scores (y is None) or the loss and every parameter's gradient.

        Parameters
        ----------
        X : ndarray, shape (N, C, H, W); cast to the model's dtype (never modified)
        y : ndarray, shape (N,), int, or None

        Returns
        -------
        scores : ndarray, shape (N, num_classes)
            When y is None.
        (loss, grads) : float and dict
            Otherwise; ``grads[k]`` has the shape of ``params[k]``.
        """
        X = np.asarray(X).astype(self.dtype, copy=False)
        p = self.params
        h1, cache1 = conv_relu_pool_forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param)
        h2, cache2 = affine_relu_forward(h1, p["W2"], p["b2"])
        scores, cache3 = affine_forward(h2, p["W3"], p["b3"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        weights = ("W1", "W2", "W3")
        loss += 0.5 * self.reg * _l2(p, weights)
        grads = {}
        dh2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)
        dh1, grads["W2"], grads["b2"] = affine_relu_backward(dh2, cache2)
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dh1, cache1)
        for name in weights:
            grads[name] = grads[name] + self.reg * p[name]
        return loss, grads


class FullyConnectedNet:
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Parameters
    ----------
    hidden_dims : sequence of int
        Units of each hidden layer (L - 1 of them; may be empty).
    input_dim : int
        D, the size of one input once flattened.
    num_classes : int
    dropout_keep_ratio : float in (0, 1]
        Probability of keeping a unit; 1 means no dropout.
    normalization : None, 'batchnorm' or 'layernorm'
    reg : float
        L2 regularisation strength, >= 0.
    weight_scale : float
        Standard deviation of the normal weights; biases and betas start at
        zero, gammas at one.
    dtype : np.float32 or np.float64
    seed : int or None
        Passed to the dropout layers, which then draw the same masks on
        every call (the weights are not seeded by it, as in the course).

    Attributes
    ----------
    params : dict
        'W1' ... 'WL' : (dims[i-1], dims[i]) with dims = [input_dim,
        *hidden_dims, num_classes]; 'b1' ... 'bL' : (dims[i],); with
        normalization, 'gamma1' ... and 'beta1' ... for the L - 1 hidden layers.
    num_layers : int
        L.
    normalization, use_dropout, reg, dtype
    dropout_param : dict
        {'mode', 'p'[, 'seed']} when dropout is used, else {}.
    bn_params : list of dict
        One per hidden layer with normalization ('mode' set by ``loss`` for
        batchnorm, which keeps its running statistics there), else [].
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout_keep_ratio=1,
                 normalization=None, reg=0.0, weight_scale=1e-2, dtype=np.float32, seed=None):
        try:
            hidden_dims = [_positive_int(h, f"hidden_dims[{i}]") for i, h in enumerate(hidden_dims)]
        except TypeError:
            raise CnnCheckError(f"hidden_dims must be a sequence of ints, got {hidden_dims!r}") from None
        input_dim = _positive_int(input_dim, "input_dim")
        num_classes = _positive_int(num_classes, "num_classes")
        if (isinstance(dropout_keep_ratio, bool) or not isinstance(dropout_keep_ratio, numbers.Real)
                or not 0 < dropout_keep_ratio <= 1):
            raise CnnCheckError(f"dropout_keep_ratio must be in (0, 1], got {dropout_keep_ratio!r}")
        if normalization not in NORMALIZATIONS:
            raise CnnCheckError(f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}")
        weight_scale = _non_negative(weight_scale, "weight_scale")
        if seed is not None:
            seed = geometry._as_int(seed, "seed")
        self.normalization = normalization
        self.use_dropout = dropout_keep_ratio != 1
        self.reg = _non_negative(reg, "reg")
        self.num_layers = 1 + len(hidden_dims)
        self.dtype = _float_dtype(dtype)
        self.params = {}
        dims = [input_dim, *hidden_dims, num_classes]
        for i in range(1, self.num_layers + 1):
            self.params[f"W{i}"] = weight_scale * np.random.randn(dims[i - 1], dims[i])
            self.params[f"b{i}"] = np.zeros(dims[i])
            if normalization is not None and i < self.num_layers:
                self.params[f"gamma{i}"] = np.ones(dims[i])
                self.params[f"beta{i}"] = np.zeros(dims[i])
        self.dropout_param = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": float(dropout_keep_ratio)}
            if seed is not None:
                self.dropout_param["seed"] = seed
        self.bn_params = []
        if normalization == "batchnorm":
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]
        elif normalization == "layernorm":
            self.bn_params = [{} for _ in range(self.num_layers - 1)]
        for name, value in self.params.items():
            self.params[name] = value.astype(self.dtype)

    def loss(self, X, y=None):
        """Scores (y is None, test mode) or the loss and every parameter's gradient (train mode).

        Parameters
        ----------
        X : ndarray, shape (N, d_1, ..., d_k) with d_1 * ... * d_k = input_dim;
            cast to the model's dtype (never modified)
        y : ndarray, shape (N,), int, or None

        Returns
        -------
        scores : ndarray, shape (N, num_classes)
            When y is None.
        (loss, grads) : float and dict
            Otherwise; ``grads[k]`` has the shape of ``params[k]``.
        """
        X = np.asarray(X).astype(self.dtype, copy=False)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        if self.normalization == "batchnorm":
            for bn_param in self.bn_params:
                bn_param["mode"] = mode
        p = self.params
        L = self.num_layers
        h = X
        caches = []
        for i in range(1, L):
            W, b = p[f"W{i}"], p[f"b{i}"]
            if self.normalization == "batchnorm":
                h, cache = affine_bn_relu_forward(h, W, b, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            elif self.normalization == "layernorm":
                h, cache = affine_ln_relu_forward(h, W, b, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            else:
                h, cache = affine_relu_forward(h, W, b)
            drop_cache = None
            if self.use_dropout:
                h, drop_cache = dropout_forward(h, self.dropout_param)
            caches.append((cache, drop_cache))
        scores, last_cache = affine_forward(h, p[f"W{L}"], p[f"b{L}"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        weights = [f"W{i}" for i in range(1, L + 1)]
        loss += 0.5 * self.reg * _l2(p, weights)
        grads = {}
        dh, grads[f"W{L}"], grads[f"b{L}"] = affine_backward(dscores, last_cache)
        for i in range(L - 1, 0, -1):
            cache, drop_cache = caches[i - 1]
            if self.use_dropout:
                dh = dropout_backward(dh, drop_cache)
            if self.normalization == "batchnorm":
                dh, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = \
                    affine_bn_relu_backward(dh, cache)
            elif self.normalization == "layernorm":
                dh, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = \
                    affine_ln_relu_backward(dh, cache)
            else:
                dh, grads[f"W{i}"], grads[f"b{i}"] = affine_relu_backward(dh, cache)
        for name in weights:
            grads[name] = grads[name] + self.reg * p[name]
        return loss, grads
