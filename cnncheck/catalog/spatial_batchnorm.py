"""Spatial batch normalisation: ``spatial_batchnorm_forward(x, gamma, beta, bn_param)``.

x (N, C, H, W), gamma (C,), beta (C,); out (N, C, H, W).  Each channel is
normalised over the batch and every pixel (its N*H*W values), as
batchnorm does for x seen as (N*H*W, C); ``bn_param`` is batchnorm's, with
running statistics of shape (C,) updated in place in train mode (the
layer's state, written by design).
"""

from __future__ import annotations

from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import bn_param, check_eps, dim, elementwise_bytes, features, running_stats
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, C, H, W = p["shape"]
    x, mean, std = features(rng, p["shape"], 1, dtype)
    running_mean, running_var = running_stats(rng, mean, std, dtype)
    values = {"x": x, "gamma": randn(rng, (C,), dtype), "beta": randn(rng, (C,), dtype),
              "bn_param": bn_param(p, running_mean, running_var)}
    return Sample(values, randn(rng, p["shape"], dtype))


def shapes(p) -> dict:
    N, C, H, W = p["shape"]
    return {"x": p["shape"], "gamma": (C,), "beta": (C,), "out": p["shape"], "running_mean": (C,),
            "running_var": (C,), "workspace": (4 * N * C * H * W,)}


def check(p) -> None:
    check_eps(p, "spatial_batchnorm")
    N, C, H, W = p["shape"]
    if p["mode"] == "train" and N * H * W == 1:
        raise CnnCheckError("spatial_batchnorm in train mode needs more than one value per channel "
                            f"(N*H*W > 1), got shape {p['shape']}")


SPEC = LayerSpec(
    name="spatial_batchnorm",
    title="Spatial batch normalisation",
    functions={"": ("spatial_batchnorm_forward", "spatial_batchnorm_backward")},
    inputs=(Input("x"), Input("gamma"), Input("beta"), Input("bn_param", "config")),
    params=(
        Param("shape", "shape", (2, 3, 4, 5), "input shape N,C,H,W", bench=(100, 3, 32, 32), ndim=(4,)),
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
        Geometry("notebook", {}, "the course notebook's check: x (2, 3, 4, 5), train mode"),
        Geometry("channels", {"shape": (3, 4, 5, 2)}, "C = 4, H > W, N = 3: no two sizes alike"),
        Geometry("single", {"shape": (1, 2, 3, 4), "eps": 0.1, "momentum": 0.5},
                 "N = 1 (the statistics still span H*W pixels), a large eps and another momentum"),
        Geometry("test", {"shape": (2, 5, 3, 4), "mode": "test"}, "test mode, with the running statistics, C = 5"),
        Geometry("gray", {"shape": (4, 1, 2, 3), "mode": "test", "eps": 0.1}, "C = 1 in test mode"),
    ),
    reference="numpy",
    state=("running_mean", "running_var"),
    bytes=elementwise_bytes(1),
    check=check,
    sweep={"N": dim(0), "C": dim(1), "H": dim(2), "W": dim(3)},
    impls=(
        Builtin("numpy", "cnncheck.layers.norm:spatial_batchnorm_forward",
                "cnncheck.layers.norm:spatial_batchnorm_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:spatial_batchnorm_forward",
                "cnncheck.layers.torch_extra:spatial_batchnorm_backward", "torch", "torch"),
    ),
)
