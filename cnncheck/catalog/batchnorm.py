"""Batch normalisation: ``batchnorm_forward(x, gamma, beta, bn_param)``.

x (N, D), gamma (D,), beta (D,); out (N, D).  ``bn_param`` holds ``mode``
('train' or 'test'), ``eps`` (1e-5), ``momentum`` (0.9) and the running
statistics ``running_mean`` and ``running_var`` (D,), which train mode
updates in place (``running = momentum * running + (1 - momentum) *
batch_stat``): they are the layer's state, written by design.  Train mode
normalises with the batch's mean and biased variance, test mode with the
running statistics.  ``batchnorm_backward_alt`` is the course's simplified
backward formula; ``cnncheck bench batchnorm`` times it against the staged one.
"""

from __future__ import annotations

from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import bn_param, check_eps, dim, elementwise_bytes, features, running_stats
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, D = p["shape"]
    x, mean, std = features(rng, (N, D), 1, dtype)
    running_mean, running_var = running_stats(rng, mean, std, dtype)
    values = {"x": x, "gamma": randn(rng, (D,), dtype), "beta": randn(rng, (D,), dtype),
              "bn_param": bn_param(p, running_mean, running_var)}
    return Sample(values, randn(rng, (N, D), dtype))


def shapes(p) -> dict:
    N, D = p["shape"]
    return {"x": (N, D), "gamma": (D,), "beta": (D,), "out": (N, D), "running_mean": (D,), "running_var": (D,),
            "workspace": (2 * N * D,)}


def check(p) -> None:
    check_eps(p, "batchnorm")


SPEC = LayerSpec(
    name="batchnorm",
    title="Batch normalisation",
    functions={"": ("batchnorm_forward", "batchnorm_backward"), "alt": ("batchnorm_forward", "batchnorm_backward_alt")},
    inputs=(Input("x"), Input("gamma"), Input("beta"), Input("bn_param", "config")),
    params=(
        Param("shape", "shape", (4, 5), "input shape N,D", bench=(100, 500), ndim=(2,)),
        Param("mode", "choice", "train", "'train' (batch statistics) or 'test' (running statistics)",
              choices=("train", "test"), option=False),
        Param("eps", "float", 1e-5, "added to the variance before the square root", option=False),
        Param("momentum", "float", 0.9, "weight of the old running statistics in their update",
              minimum=0.0, maximum=1.0),
    ),
    build=build,
    output_shape=lambda p: p["shape"],
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (4, 5), train mode"),
        Geometry("tall", {"shape": (7, 3)}, "N > D, so sums over the wrong axis have the wrong shape"),
        Geometry("eps", {"shape": (5, 2), "eps": 0.1, "momentum": 0.5},
                 "a large eps and another momentum: a layer that ignores bn_param's values is seen to"),
        Geometry("test", {"shape": (3, 6), "mode": "test"}, "test mode: normalised with the running statistics"),
        Geometry("single", {"shape": (1, 4), "mode": "test", "eps": 0.1},
                 "N = 1 (test mode: a batch of one has no variance to train on)"),
    ),
    reference="numpy",
    state=("running_mean", "running_var"),
    bytes=elementwise_bytes(1),
    check=check,
    sweep={"N": dim(0), "D": dim(1)},
    impls=(
        Builtin("numpy", "cnncheck.layers.norm:batchnorm_forward", "cnncheck.layers.norm:batchnorm_backward", "numpy"),
        Builtin("alt", "cnncheck.layers.norm:batchnorm_forward", "cnncheck.layers.norm:batchnorm_backward_alt",
                "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:batchnorm_forward",
                "cnncheck.layers.torch_extra:batchnorm_backward", "torch", "torch"),
    ),
)
