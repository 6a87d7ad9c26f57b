"""Spatial group normalisation: ``spatial_groupnorm_forward(x, gamma, beta, G, gn_param)``.

x (N, C, H, W), gamma (1, C, 1, 1), beta (1, C, 1, 1); out (N, C, H, W).
The C channels are split into G groups of C // G consecutive channels;
each sample's group is normalised over its C // G * H * W values, then each
channel is scaled and shifted.  G (a number, passed as is) must divide C;
``gn_param`` holds ``eps`` (1e-5).  No mode, no state.
"""

from __future__ import annotations

from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import check_eps, dim, elementwise_bytes, features
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    N, C, H, W = p["shape"]
    x, _, _ = features(rng, p["shape"], 1, dtype)
    values = {"x": x, "gamma": randn(rng, (1, C, 1, 1), dtype), "beta": randn(rng, (1, C, 1, 1), dtype),
              "G": p["G"], "gn_param": {"eps": p["eps"]}}
    return Sample(values, randn(rng, p["shape"], dtype))


def shapes(p) -> dict:
    N, C, H, W = p["shape"]
    return {"x": p["shape"], "gamma": (1, C, 1, 1), "beta": (1, C, 1, 1), "out": p["shape"],
            "workspace": (2 * N * C * H * W,)}


def check(p) -> None:
    check_eps(p, "spatial_groupnorm")
    C = p["shape"][1]
    if C % p["G"]:
        raise CnnCheckError(f"spatial_groupnorm G must divide the channels C = {C}, got G = {p['G']}; "
                            f"use one of {', '.join(str(g) for g in range(1, C + 1) if C % g == 0)}")


SPEC = LayerSpec(
    name="spatial_groupnorm",
    title="Spatial group normalisation",
    functions={"": ("spatial_groupnorm_forward", "spatial_groupnorm_backward")},
    inputs=(Input("x"), Input("gamma"), Input("beta"), Input("G", "const"), Input("gn_param", "config")),
    params=(
        Param("shape", "shape", (2, 6, 4, 5), "input shape N,C,H,W", bench=(100, 6, 32, 32), ndim=(4,)),
        Param("G", "int", 2, "number of groups, dividing C", minimum=1),
        Param("eps", "float", 1e-5, "added to the variance before the square root", option=False),
    ),
    build=build,
    output_shape=lambda p: p["shape"],
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (2, 6, 4, 5), G = 2 (groups of 3 channels)"),
        Geometry("groups3", {"shape": (1, 6, 4, 5), "G": 3, "eps": 0.1},
                 "G = 3, groups of 2 channels, N = 1, a large eps"),
        Geometry("layer", {"shape": (3, 4, 2, 5), "G": 1}, "G = 1 (layer norm over C, H, W), H < W"),
        Geometry("instance", {"shape": (2, 5, 3, 4), "G": 5}, "G = C = 5 (instance norm), odd C"),
    ),
    reference="numpy",
    bytes=elementwise_bytes(1),
    check=check,
    sweep={"N": dim(0), "C": dim(1), "H": dim(2), "W": dim(3)},
    impls=(
        Builtin("numpy", "cnncheck.layers.norm:spatial_groupnorm_forward",
                "cnncheck.layers.norm:spatial_groupnorm_backward", "numpy"),
        Builtin("torch", "cnncheck.layers.torch_extra:spatial_groupnorm_forward",
                "cnncheck.layers.torch_extra:spatial_groupnorm_backward", "torch", "torch"),
    ),
)
