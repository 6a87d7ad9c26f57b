"""Convolution then ReLU: ``conv_relu_forward(x, w, b, conv_param)``, the course's sandwich layer.

x (N, C, H, W), w (F, C, HH, WW), b (F,), ``conv_param = {'stride': s,
'pad': p}``; out (N, F, H_out, W_out) = ``max(0, conv(x, w) + b)`` with
``H_out = 1 + (H + 2*pad - HH) // stride``; ``conv_relu_backward`` returns
(dx, dw, db).  A relu sits inside, so the layer has kinks (``kinks``).
"""

from __future__ import annotations

from cnncheck.catalog import conv
from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import dim, spread
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def build(p, rng, dtype, margin, kinks) -> Sample:
    s = spread(margin)
    values = {"x": s * randn(rng, p["shape"], dtype), "w": s * randn(rng, conv.w_shape(p), dtype),
              "b": s * randn(rng, (p["filters"],), dtype), "conv_param": {"stride": p["stride"], "pad": p["pad"]}}
    return Sample(values, randn(rng, conv.output_shape(p), dtype))


SPEC = LayerSpec(
    name="conv_relu",
    title="Convolution - ReLU",
    functions={"": ("conv_relu_forward", "conv_relu_backward")},
    inputs=(Input("x"), Input("w"), Input("b"), Input("conv_param", "config")),
    params=(
        Param("shape", "shape", (2, 3, 8, 8), "input shape N,C,H,W", bench=(100, 3, 31, 31), ndim=(4,)),
        Param("filters", "int", 3, "number of filters F", bench=25, minimum=1),
        Param("kernel", "kernel", (3, 3), "filter size HH,WW (or K for a square one)"),
        Param("stride", "int", 1, "stride of the filter", bench=2, minimum=1),
        Param("pad", "int", 1, "zero padding on every side", minimum=0),
    ),
    build=build,
    output_shape=conv.output_shape,
    shapes=conv.shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (2, 3, 8, 8), w (3, 3, 3, 3), stride 1, pad 1"),
        Geometry("pad0", {"shape": (2, 4, 5, 7), "filters": 8, "kernel": (3, 2), "stride": 1, "pad": 0},
                 "pad 0, H != W, HH != WW, C = 4, F = 8"),
        Geometry("stride2", {"shape": (1, 1, 7, 8), "filters": 6, "kernel": (3, 2), "stride": 2, "pad": 1},
                 "N = 1, C = 1, stride 2, H_out != W_out"),
    ),
    reference="fast",
    kinks=True,
    flops=conv.flops,
    check=conv.check,
    sweep={"N": dim(0), "C": dim(1), "H": dim(2), "W": dim(3), "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("fast", "cnncheck.layers.sandwich:conv_relu_forward", "cnncheck.layers.sandwich:conv_relu_backward",
                "kernels"),
        Builtin("torch", "cnncheck.layers.torch_extra:conv_relu_forward",
                "cnncheck.layers.torch_extra:conv_relu_backward", "torch", "torch"),
    ),
)
