"""Normalisation layers with the course notebook's names: batch, layer, spatial batch and spatial group norm.

Loop-free numpy references, following the contract of :mod:`cnncheck.layers.naive`::

    out, cache = <layer>_forward(x, gamma, beta, ..., param)
    dx, dgamma, dbeta = <layer>_backward(dout, cache)

Every layer normalises a group of values to zero mean and unit variance and
then scales and shifts it::

    xhat = (x - mean) / sqrt(var + eps)
    out  = gamma * xhat + beta

``var`` is the biased variance (divided by the group's size, not size - 1),
as in the course.  The layers differ only in the group: batchnorm uses each
feature over the batch, layernorm each sample over its features, spatial
batchnorm each channel over the batch and every pixel, and spatial groupnorm
each sample's group of channels over every pixel.

``x``, ``gamma``, ``beta`` and ``dout`` are never modified.
The only write is the one batchnorm does by design: in train mode it updates
``bn_param['running_mean']`` and ``bn_param['running_var']`` in place, and it
stores zeros there first when they are absent (as the course does).  float32
stays float32 when x, gamma and beta are all float32; anything else is
computed in float64.  Bad shapes or parameters raise
:class:`cnncheck.errors.CnnCheckError` (a ``ValueError``) naming the problem.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError
from cnncheck.layers.naive import as_float_array, check_dout, common_dtype

#: Defaults the course uses when a key is absent from ``bn_param``/``ln_param``/``gn_param``.
DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.9
MODES = ("train", "test")


# -- parameter dicts --------------------------------------------------------------
def _param_dict(param, name: str) -> dict:
    if not isinstance(param, dict):
        raise CnnCheckError(f"{name} must be a dict, got {type(param).__name__}")
    return param


def _real(value, name: str, low: float, high: float | None = None, *, low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CnnCheckError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not np.isfinite(value) or too_low or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise CnnCheckError(f"{name} must be in {bounds}, got {value!r}")
    return value


def param_mode(param: dict, name: str) -> str:
    """The required ``'mode'`` of a course parameter dict: ``'train'`` or ``'test'``."""
    if "mode" not in param:
        raise CnnCheckError(f"{name} must have a 'mode' key, 'train' or 'test'; got keys {sorted(param)}")
    mode = param["mode"]
    if not isinstance(mode, str) or mode not in MODES:
        raise CnnCheckError(f"{name}['mode'] must be 'train' or 'test', got {mode!r}")
    return mode


def param_eps(param: dict, name: str) -> float:
    """``param['eps']`` (default 1e-5), a finite float > 0; ``param`` must be a dict."""
    return _real(_param_dict(param, name).get("eps", DEFAULT_EPS), f"{name}['eps']", 0.0, low_open=True)


def bn_settings(bn_param, D: int, dtype: np.dtype) -> tuple:
    """Validate ``bn_param`` for D features and fill in the course's defaults.

    Stores zero ``running_mean`` and ``running_var`` of shape (D,) and dtype
    ``dtype`` in ``bn_param`` when they are absent, as the course does.

    Returns
    -------
    (mode, eps, momentum, running_mean, running_var)
        In train mode the running statistics are the arrays ``bn_param``
        holds, for :func:`update_running` to write into; in test mode they
        are float arrays to read only.
    """
    bn_param = _param_dict(bn_param, "bn_param")
    mode = param_mode(bn_param, "bn_param")
    eps = param_eps(bn_param, "bn_param")
    momentum = _real(bn_param.get("momentum", DEFAULT_MOMENTUM), "bn_param['momentum']", 0.0, 1.0)
    stats = []
    for key in ("running_mean", "running_var"):
        if key not in bn_param:
            stats.append(np.zeros(D, dtype=dtype))
            continue
        stat = bn_param[key]
        if mode == "train":  # updated in place: must be a writeable float array
            ok = (isinstance(stat, np.ndarray) and stat.dtype in (np.float32, np.float64)
                  and stat.shape == (D,) and stat.flags.writeable)
            if not ok:
                got = (f"{'read-only ' if not stat.flags.writeable else ''}{stat.dtype} array of shape {stat.shape}"
                       if isinstance(stat, np.ndarray) else type(stat).__name__)
                raise CnnCheckError(
                    f"bn_param[{key!r}] must be a writeable float32 or float64 array of shape ({D},), updated in "
                    f"place in train mode; got {got}. Leave the key out to start from zeros"
                )
        else:
            stat = as_float_array(stat, f"bn_param[{key!r}]")
            if stat.shape != (D,):
                raise CnnCheckError(f"bn_param[{key!r}] must have shape ({D},) for {D} features, got {stat.shape}")
        stats.append(stat)
    if mode == "test" and np.any(stats[1] < 0):
        raise CnnCheckError("bn_param['running_var'] must be >= 0 everywhere")
    # Stored only once everything is valid, so a refused call leaves bn_param as it was.
    bn_param.setdefault("running_mean", stats[0])
    bn_param.setdefault("running_var", stats[1])
    return mode, eps, momentum, stats[0], stats[1]


def update_running(running: np.ndarray, momentum: float, batch_stat: np.ndarray) -> None:
    """``running = momentum * running + (1 - momentum) * batch_stat``, written into ``running``."""
    np.copyto(running, momentum * running + (1.0 - momentum) * batch_stat, casting="same_kind")


def check_affine_params(gamma, beta, shape: tuple, layer: str) -> tuple:
    """gamma and beta as float arrays, both checked to have ``shape``."""
    out = []
    for a, n in ((gamma, "gamma"), (beta, "beta")):
        arr = as_float_array(a, n)
        if arr.shape != shape:
            raise CnnCheckError(f"{layer}: {n} must have shape {shape}, got {arr.shape}")
        out.append(arr)
    return tuple(out)


def check_rows(x, layer: str) -> np.ndarray:
    """x as a float array, checked to have shape (N, D) with N >= 1."""
    x = as_float_array(x, "x")
    if x.ndim != 2 or x.shape[0] < 1:
        raise CnnCheckError(f"{layer}: x must have shape (N, D) with N >= 1, got {x.shape}")
    return x


def _cache(cache, names: tuple, layer: str) -> tuple:
    if not isinstance(cache, tuple) or len(cache) != len(names):
        got = type(cache).__name__ + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        raise CnnCheckError(
            f"{layer} backward: cache must be the tuple ({', '.join(names)}) its forward pass returned, got {got}"
        )
    return cache


def _normalised_backward(dxhat, xhat, inv_std, axis):
    """dx of ``xhat = (x - mean) * inv_std`` over ``axis``, the closed formula.

    ``dx = inv_std / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))``
    with the sums and M (the group's size) over ``axis``.
    """
    M = int(np.prod([dxhat.shape[a] for a in np.atleast_1d(axis)]))
    s1 = dxhat.sum(axis=axis, keepdims=True)
    s2 = (dxhat * xhat).sum(axis=axis, keepdims=True)
    return (inv_std / M) * (M * dxhat - s1 - xhat * s2)


# -- batch normalisation ------------------------------------------------------------
_BN_CACHE = ("x", "gamma", "beta", "xhat", "mean", "inv_std", "mode")


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation: each feature normalised over the batch, then scaled and shifted.

    Train mode uses the batch's mean and biased variance and updates the
    running statistics; test mode uses the running statistics::

        out = gamma * (x - mean) / sqrt(var + eps) + beta

    Parameters
    ----------
    x : ndarray, shape (N, D), float64 or float32
    gamma : ndarray, shape (D,)
        Scale.
    beta : ndarray, shape (D,)
        Shift.
    bn_param : dict
        'mode' : 'train' or 'test' (required).
        'eps' : float > 0, default 1e-5.
        'momentum' : float in [0, 1], default 0.9.
        'running_mean', 'running_var' : ndarray, shape (D,); zeros of the
        computation dtype are stored here when absent.  In train mode they
        must be writeable float arrays and are updated in place:
        ``running = momentum * running + (1 - momentum) * batch_stat``.

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, xhat, mean, inv_std, mode)
        x, gamma and beta as given (never modified); ``xhat`` (N, D) the
        normalised x; ``mean`` (D,) and ``inv_std`` (D,), ``1 / sqrt(var +
        eps)``, the statistics used (the batch's in train mode, copies of
        the running ones in test mode); ``mode``.
    """
    x_arr = check_rows(x, "batchnorm")
    D = x_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (D,), "batchnorm")
    dtype = common_dtype(x_arr, gamma_arr, beta_arr)
    mode, eps, momentum, running_mean, running_var = bn_settings(bn_param, D, dtype)
    x_arr = x_arr.astype(dtype, copy=False)
    if mode == "train":
        mean = x_arr.mean(axis=0)
        var = np.square(x_arr - mean).mean(axis=0)
        update_running(running_mean, momentum, mean)
        update_running(running_var, momentum, var)
    else:
        mean = np.array(running_mean, dtype=dtype)
        var = np.asarray(running_var, dtype=dtype)
    inv_std = 1.0 / np.sqrt(var + dtype.type(eps))
    xhat = (x_arr - mean) * inv_std
    out = gamma_arr.astype(dtype, copy=False) * xhat + beta_arr.astype(dtype, copy=False)
    return out, (x, gamma, beta, xhat, mean, inv_std, mode)


def _bn_unpack(dout, cache, layer):
    x, gamma, beta, xhat, mean, inv_std, mode = _cache(cache, _BN_CACHE, layer)
    dtype = xhat.dtype
    dout = check_dout(dout, xhat.shape, layer).astype(dtype, copy=False)
    gamma = as_float_array(gamma, "gamma").astype(dtype, copy=False)
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    return x, gamma, xhat, mean, inv_std, mode, dout, dgamma, dbeta


def batchnorm_backward(dout, cache):
    """Backward pass of :func:`batchnorm_forward`, stage by stage through the graph.

    Train mode walks back through ``xc = x - mean``, ``var = mean(xc**2)``,
    ``inv_std = (var + eps)**-0.5`` and ``xhat = xc * inv_std``, summing
    each node's gradient.  Test mode is affine: ``dx = dout * gamma * inv_std``.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, xhat, mean, inv_std, mode) from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma : ndarray, shape (D,)
    dbeta : ndarray, shape (D,)
    """
    x, gamma, xhat, mean, inv_std, mode, dout, dgamma, dbeta = _bn_unpack(dout, cache, "batchnorm")
    dxhat = dout * gamma
    if mode == "test":
        return dxhat * inv_std, dgamma, dbeta
    N = xhat.shape[0]
    xc = as_float_array(x, "x").astype(xhat.dtype, copy=False) - mean
    dinv_std = (dxhat * xc).sum(axis=0)
    dvar = -0.5 * inv_std ** 3 * dinv_std
    dxc = dxhat * inv_std + (2.0 / N) * xc * dvar
    dmean = -dxc.sum(axis=0)
    dx = dxc + dmean / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Backward pass of :func:`batchnorm_forward` in one simplified closed formula.

    Train mode, with ``dxhat = dout * gamma`` and sums over the batch::

        dx = inv_std / N * (N * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))

    Test mode: ``dx = dout * gamma * inv_std``.  Same parameters and results
    as :func:`batchnorm_backward` (up to rounding).

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, xhat, mean, inv_std, mode) from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma : ndarray, shape (D,)
    dbeta : ndarray, shape (D,)
    """
    _, gamma, xhat, _, inv_std, mode, dout, dgamma, dbeta = _bn_unpack(dout, cache, "batchnorm")
    dxhat = dout * gamma
    if mode == "test":
        return dxhat * inv_std, dgamma, dbeta
    return _normalised_backward(dxhat, xhat, inv_std, 0), dgamma, dbeta


# -- layer normalisation ------------------------------------------------------------
_LN_CACHE = ("x", "gamma", "beta", "xhat", "mean", "inv_std")


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalisation: each sample normalised over its features, then scaled and shifted.

    ``out = gamma * (x - mean) / sqrt(var + eps) + beta`` with the mean and
    biased variance of each row.  The same in train and test mode.

    Parameters
    ----------
    x : ndarray, shape (N, D), float64 or float32
    gamma : ndarray, shape (D,)
    beta : ndarray, shape (D,)
    ln_param : dict
        'eps' : float > 0, default 1e-5.  Other keys (such as 'mode') are ignored.

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, xhat, mean, inv_std)
        x, gamma and beta as given (never modified); ``xhat`` (N, D);
        ``mean`` and ``inv_std`` (N, 1), each row's mean and
        ``1 / sqrt(var + eps)``.
    """
    x_arr = check_rows(x, "layernorm")
    D = x_arr.shape[1]
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (D,), "layernorm")
    eps = param_eps(ln_param, "ln_param")
    dtype = common_dtype(x_arr, gamma_arr, beta_arr)
    x_arr = x_arr.astype(dtype, copy=False)
    mean = x_arr.mean(axis=1, keepdims=True)
    xc = x_arr - mean
    inv_std = 1.0 / np.sqrt(np.square(xc).mean(axis=1, keepdims=True) + dtype.type(eps))
    xhat = xc * inv_std
    out = gamma_arr.astype(dtype, copy=False) * xhat + beta_arr.astype(dtype, copy=False)
    return out, (x, gamma, beta, xhat, mean, inv_std)


def layernorm_backward(dout, cache):
    """Backward pass of :func:`layernorm_forward`.

    With ``dxhat = dout * gamma`` and sums over each row's D features::

        dx = inv_std / D * (D * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : tuple (x, gamma, beta, xhat, mean, inv_std) from :func:`layernorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma : ndarray, shape (D,)
    dbeta : ndarray, shape (D,)
    """
    _, gamma, _, xhat, _, inv_std = _cache(cache, _LN_CACHE, "layernorm")
    dtype = xhat.dtype
    dout = check_dout(dout, xhat.shape, "layernorm").astype(dtype, copy=False)
    gamma = as_float_array(gamma, "gamma").astype(dtype, copy=False)
    dx = _normalised_backward(dout * gamma, xhat, inv_std, 1)
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


# -- spatial batch normalisation ----------------------------------------------------------
def check_images(x, layer: str) -> np.ndarray:
    """x as a float array, checked to have shape (N, C, H, W) with N >= 1."""
    x = as_float_array(x, "x")
    if x.ndim != 4 or x.shape[0] < 1:
        raise CnnCheckError(f"{layer}: x must have shape (N, C, H, W) with N >= 1, got {x.shape}")
    return x


def check_groups(G, C: int) -> int:
    """The number of groups G as an int, checked to be >= 1 and to divide C."""
    groups = geometry._as_int(G, "G")
    if groups < 1 or C % groups:
        raise CnnCheckError(f"spatial groupnorm: G must be >= 1 and divide C = {C}, got G = {groups}")
    return groups


def _to_rows(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*H*W, C): one row per pixel, one column per channel."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def _from_rows(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of :func:`_to_rows`, C-contiguous."""
    N, C, H, W = shape
    return np.ascontiguousarray(a.reshape(N, H, W, C).transpose(0, 3, 1, 2))


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Spatial batch normalisation: each channel normalised over the batch and every pixel.

    :func:`batchnorm_forward` applied to x seen as (N*H*W, C), one row per
    pixel; the running statistics have shape (C,).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    gamma : ndarray, shape (C,)
    beta : ndarray, shape (C,)
    bn_param : dict
        As for :func:`batchnorm_forward`, with D = C.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : tuple (x, bn_cache)
        x as given (never modified), and the cache of
        :func:`batchnorm_forward` on the (N*H*W, C) rows.
    """
    x_arr = check_images(x, "spatial batchnorm")
    C = x_arr.shape[1]
    check_affine_params(gamma, beta, (C,), "spatial batchnorm")
    out, bn_cache = batchnorm_forward(_to_rows(x_arr), gamma, beta, bn_param)
    return _from_rows(out, x_arr.shape), (x, bn_cache)


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_batchnorm_forward`, through :func:`batchnorm_backward`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : tuple (x, bn_cache) from :func:`spatial_batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma : ndarray, shape (C,)
    dbeta : ndarray, shape (C,)
    """
    x, bn_cache = _cache(cache, ("x", "bn_cache"), "spatial batchnorm")
    shape = np.shape(x)
    dout = check_dout(dout, shape, "spatial batchnorm")
    dx, dgamma, dbeta = batchnorm_backward(_to_rows(dout), bn_cache)
    return _from_rows(dx, shape), dgamma, dbeta


# -- spatial group normalisation --------------------------------------------------------
_GN_CACHE = ("x", "gamma", "beta", "G", "xhat", "mean", "inv_std")


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Spatial group normalisation: each sample's group of C // G channels normalised over every pixel.

    The channels are split into G consecutive groups; each (sample, group)
    pair is normalised with its own mean and biased variance over its
    C // G * H * W values, then each channel is scaled and shifted.  The
    same in train and test mode.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    gamma : ndarray, shape (1, C, 1, 1)
    beta : ndarray, shape (1, C, 1, 1)
    G : int
        Number of groups, >= 1, dividing C.
    gn_param : dict
        'eps' : float > 0, default 1e-5.  Other keys are ignored.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, G, xhat, mean, inv_std)
        x, gamma, beta and G as given (never modified); ``xhat`` (N, C, H, W)
        the normalised x; ``mean`` and ``inv_std`` (N, G, 1), each group's
        mean and ``1 / sqrt(var + eps)``.
    """
    x_arr = check_images(x, "spatial groupnorm")
    N, C, H, W = x_arr.shape
    gamma_arr, beta_arr = check_affine_params(gamma, beta, (1, C, 1, 1), "spatial groupnorm")
    groups = check_groups(G, C)
    eps = param_eps(gn_param, "gn_param")
    dtype = common_dtype(x_arr, gamma_arr, beta_arr)
    xg = x_arr.astype(dtype, copy=False).reshape(N, groups, -1)
    mean = xg.mean(axis=2, keepdims=True)
    xc = xg - mean
    inv_std = 1.0 / np.sqrt(np.square(xc).mean(axis=2, keepdims=True) + dtype.type(eps))
    xhat = (xc * inv_std).reshape(N, C, H, W)
    out = gamma_arr.astype(dtype, copy=False) * xhat + beta_arr.astype(dtype, copy=False)
    return out, (x, gamma, beta, G, xhat, mean, inv_std)


def spatial_groupnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_groupnorm_forward`.

    The closed formula of :func:`layernorm_backward` over each group's
    M = C // G * H * W values, with ``dxhat = dout * gamma``.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : tuple (x, gamma, beta, G, xhat, mean, inv_std) from :func:`spatial_groupnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma : ndarray, shape (1, C, 1, 1)
    dbeta : ndarray, shape (1, C, 1, 1)
    """
    _, gamma, _, _, xhat, _, inv_std = _cache(cache, _GN_CACHE, "spatial groupnorm")
    dtype = xhat.dtype
    N, C, H, W = xhat.shape
    groups = inv_std.shape[1]
    dout = check_dout(dout, xhat.shape, "spatial groupnorm").astype(dtype, copy=False)
    gamma = as_float_array(gamma, "gamma").astype(dtype, copy=False)
    dxhat = (dout * gamma).reshape(N, groups, -1)
    dx = _normalised_backward(dxhat, xhat.reshape(N, groups, -1), inv_std, 2).reshape(N, C, H, W)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    return dx, dgamma, dbeta
