"""Convolution: ``conv_forward_naive(x, w, b, conv_param)`` and its fast twin.

x (N, C, H, W), w (F, C, HH, WW), b (F,), ``conv_param = {'stride': s,
'pad': p}`` (zero padding on every side); out (N, F, H_out, W_out) with
``H_out = 1 + (H + 2*pad - HH) // stride``.
"""

from __future__ import annotations

from cnncheck.catalog._inputs import randn, shape_dim
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def w_shape(p) -> tuple:
    return (p["filters"], p["shape"][1], *p["kernel"])


def output_shape(p) -> tuple:
    N, _, H, W = p["shape"]
    HH, WW = p["kernel"]
    s, pad = p["stride"], p["pad"]
    return (N, p["filters"], 1 + (H + 2 * pad - HH) // s, 1 + (W + 2 * pad - WW) // s)


def check(p) -> None:
    N, C, H, W = p["shape"]
    HH, WW = p["kernel"]
    if HH > H + 2 * p["pad"] or WW > W + 2 * p["pad"]:
        raise CnnCheckError(f"conv kernel {HH}x{WW} is larger than the padded input "
                            f"{H + 2 * p['pad']}x{W + 2 * p['pad']} (H={H}, W={W}, pad={p['pad']}); "
                            "use a smaller kernel or more padding")


def build(p, rng, dtype, margin, kinks) -> Sample:
    values = {"x": randn(rng, p["shape"], dtype), "w": randn(rng, w_shape(p), dtype),
              "b": randn(rng, (p["filters"],), dtype),
              "conv_param": {"stride": p["stride"], "pad": p["pad"]}}
    return Sample(values, randn(rng, output_shape(p), dtype))


def shapes(p) -> dict:
    N, F, H_out, W_out = output_shape(p)
    N, C, H, W = p["shape"]
    HH, WW = p["kernel"]
    return {"x": p["shape"], "w": w_shape(p), "b": (p["filters"],), "out": output_shape(p),
            "workspace": (2 * C * HH * WW * N * H_out * W_out + 2 * N * C * (H + 2 * p["pad"]) * (W + 2 * p["pad"]),)}


def flops(p) -> tuple:
    N, F, H_out, W_out = output_shape(p)
    C = p["shape"][1]
    HH, WW = p["kernel"]
    forward = 2 * N * F * H_out * W_out * C * HH * WW
    return forward, 2 * forward


SPEC = LayerSpec(
    name="conv",
    title="Convolution",
    functions={"": ("conv_forward_naive", "conv_backward_naive"), "fast": ("conv_forward_fast", "conv_backward_fast")},
    inputs=(Input("x"), Input("w"), Input("b"), Input("conv_param", "config")),
    params=(
        Param("shape", "shape", (4, 3, 5, 5), "input shape N,C,H,W", bench=(100, 3, 31, 31), ndim=(4,)),
        Param("filters", "int", 2, "number of filters F", bench=25, minimum=1),
        Param("kernel", "kernel", (3, 3), "filter size HH,WW (or K for a square one)"),
        Param("stride", "int", 2, "stride of the filter", minimum=1),
        Param("pad", "int", 1, "zero padding on every side", minimum=0),
    ),
    build=build,
    output_shape=output_shape,
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (4, 3, 5, 5), w (2, 3, 3, 3), stride 2, pad 1"),
        Geometry("pad0", {"shape": (2, 4, 5, 7), "filters": 3, "kernel": (3, 2), "stride": 1, "pad": 0},
                 "pad 0, stride 1, H != W, HH != WW, H_out != W_out, C = 4"),
        Geometry("stride3", {"shape": (1, 1, 7, 5), "filters": 2, "kernel": (2, 3), "stride": 3, "pad": 2},
                 "N = 1, C = 1, stride 3, pad 2, odd sizes"),
        Geometry("wide", {"shape": (2, 2, 7, 11), "filters": 4, "kernel": (3, 5), "stride": 2, "pad": 1},
                 "C = 2, F = 4, a wide kernel, W_out != H_out"),
        Geometry("floor", {"shape": (2, 2, 6, 9), "filters": 3, "kernel": (3, 3), "stride": 3, "pad": 1},
                 "sizes that do not divide evenly: H_out = 1 + 5 // 3 (floor); refusing them is allowed",
                 uneven=True),
    ),
    reference="naive",
    flops=flops,
    check=check,
    sweep={"N": shape_dim(0), "C": shape_dim(1), "H": shape_dim(2), "W": shape_dim(3),
           "F": lambda p, v: {**p, "filters": v}, "K": lambda p, v: {**p, "kernel": (v, v)}},
    impls=(
        Builtin("naive", "cnncheck.layers.naive:conv_forward_naive", "cnncheck.layers.naive:conv_backward_naive",
                "python loops"),
        Builtin("fast", "cnncheck.layers.fast:conv_forward_fast", "cnncheck.layers.fast:conv_backward_fast", "kernels"),
        Builtin("torch", "cnncheck.layers.torch_impl:conv_forward", "cnncheck.layers.torch_impl:conv_backward",
                "torch", "torch"),
    ),
)
