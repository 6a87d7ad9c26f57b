"""Layer normalisation: ``layernorm_forward(x, gamma, beta, ln_param)``.

x (N, D), gamma (D,), beta (D,); out (N, D).  Each sample (row) is
normalised over its D features with its own mean and biased variance, then
scaled and shifted per feature; ``ln_param`` holds ``eps`` (1e-5).  The same
in train and test mode, and no state.
"""

from __future__ import annotations

from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import check_eps, dim, elementwise_bytes, features
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, D = p["shape"]
    x, _, _ = features(rng, (N, D), 1, dtype)
    values = {"x": x, "gamma": randn(rng, (D,), dtype), "beta": randn(rng, (D,), dtype),
              "ln_param": {"eps": p["eps"]}}
    return Sample(values, randn(rng, (N, D), dtype))


def shapes(p) -> dict:
    N, D = p["shape"]
    return {"x": (N, D), "gamma": (D,), "beta": (D,), "out": (N, D), "workspace": (2 * N * D,)}


def check(p) -> None:
    check_eps(p, "layernorm")


SPEC = LayerSpec(
    name="layernorm",
    title="Layer normalisation",
    functions={"": ("layernorm_forward", "layernorm_backward")},
    inputs=(Input("x"), Input("gamma"), Input("beta"), Input("ln_param", "config")),
    params=(
        Param("shape", "shape", (4, 5), "input shape N,D", bench=(100, 500), ndim=(2,)),
        Param("eps", "float", 1e-5, "added to the variance before the square root", option=False),
    ),
    build=build,
    output_shape=lambda p: p["shape"],
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (4, 5)"),
        Geometry("tall", {"shape": (7, 3)}, "N > D: statistics over the batch axis have the wrong length"),
        Geometry("single", {"shape": (1, 6)}, "N = 1: a sample is normalised on its own"),
        Geometry("eps", {"shape": (3, 8), "eps": 0.1}, "a large eps: a layer that ignores ln_param's is seen to"),
    ),
    reference="numpy",
    bytes=elementwise_bytes(1),
    check=check,
    sweep={"N": dim(0), "D": dim(1)},
    impls=(
        Builtin("numpy", "cnncheck.layers.norm:layernorm_forward", "cnncheck.layers.norm:layernorm_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:layernorm_forward",
                "cnncheck.layers.torch_extra:layernorm_backward", "torch", "torch"),
    ),
)
