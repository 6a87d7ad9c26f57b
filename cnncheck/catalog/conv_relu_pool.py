"""Convolution, ReLU, then max pooling: ``conv_relu_pool_forward(x, w, b, conv_param, pool_param)``.

x (N, C, H, W), w (F, C, HH, WW), b (F,), ``conv_param = {'stride': s,
'pad': p}``, ``pool_param = {'pool_height': ph, 'pool_width': pw,
'stride': ps}``; the convolution gives (N, F, H_c, W_c) with
``H_c = 1 + (H + 2*pad - HH) // stride``, and out is (N, F, H_out, W_out)
with ``H_out = 1 + (H_c - ph) // ps``.  ``conv_relu_pool_backward``
returns (dx, dw, db).  The relu gives kinks (``kinks``) and exact zeros that
tie in pooling windows; any routing among them is right, since the relu
below passes no gradient there.
"""

from __future__ import annotations

from cnncheck.catalog import conv
from cnncheck.catalog._inputs import randn
from cnncheck.catalog._norm import dim, spread
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def conv_shape(p) -> tuple:
    return conv.output_shape(p)


def output_shape(p) -> tuple:
    N, F, H_c, W_c = conv_shape(p)
    s = p["pool_stride"]
    return (N, F, 1 + (H_c - p["pool_height"]) // s, 1 + (W_c - p["pool_width"]) // s)


def check(p) -> None:
    conv.check(p)
    _, _, H_c, W_c = conv_shape(p)
    if p["pool_height"] > H_c or p["pool_width"] > W_c:
        raise CnnCheckError(f"conv_relu_pool window {p['pool_height']}x{p['pool_width']} is larger than the "
                            f"convolution's output {H_c}x{W_c}")


def build(p, rng, dtype, margin, kinks) -> Sample:
    s = spread(margin)
    values = {"x": s * randn(rng, p["shape"], dtype), "w": s * randn(rng, conv.w_shape(p), dtype),
              "b": s * randn(rng, (p["filters"],), dtype), "conv_param": {"stride": p["stride"], "pad": p["pad"]},
              "pool_param": {"pool_height": p["pool_height"], "pool_width": p["pool_width"],
                             "stride": p["pool_stride"]}}
    return Sample(values, randn(rng, output_shape(p), dtype))


def shapes(p) -> dict:
    found = conv.shapes(p)
    N, F, H_c, W_c = conv_shape(p)
    found["out"] = output_shape(p)
    found["workspace"] = (found["workspace"][0] + 3 * N * F * H_c * W_c,)
    return found


SPEC = LayerSpec(
    name="conv_relu_pool",
    title="Convolution - ReLU - max pooling",
    functions={"": ("conv_relu_pool_forward", "conv_relu_pool_backward")},
    inputs=(Input("x"), Input("w"), Input("b"), Input("conv_param", "config"), Input("pool_param", "config")),
    params=(
        Param("shape", "shape", (2, 3, 16, 16), "input shape N,C,H,W", bench=(100, 3, 32, 32), ndim=(4,)),
        Param("filters", "int", 3, "number of filters F", bench=25, minimum=1),
        Param("kernel", "kernel", (3, 3), "filter size HH,WW (or K for a square one)"),
        Param("stride", "int", 1, "stride of the filter", minimum=1),
        Param("pad", "int", 1, "zero padding on every side", minimum=0),
        Param("pool_height", "int", 2, "pooling window height", minimum=1),
        Param("pool_width", "int", 2, "pooling window width", minimum=1),
        Param("pool_stride", "int", 2, "stride of the pooling window", minimum=1),
    ),
    build=build,
    output_shape=output_shape,
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (2, 3, 16, 16), w (3, 3, 3, 3), stride 1, pad 1, "
                                 "2x2 pooling, stride 2"),
        Geometry("pad0", {"shape": (2, 4, 6, 9), "filters": 5, "kernel": (3, 2), "pad": 0},
                 "pad 0, C = 4, H != W: convolution (2, 5, 4, 8), pooled to (2, 5, 2, 4)"),
        Geometry("overlap", {"shape": (1, 1, 9, 7), "filters": 6, "stride": 2, "pool_height": 2, "pool_width": 3,
                             "pool_stride": 1},
                 "N = 1, C = 1, conv stride 2 (convolution (1, 6, 5, 4)), overlapping 2x3 pooling windows of "
                 "stride 1"),
    ),
    reference="fast",
    kinks=True,
    flops=conv.flops,
    check=check,
    sweep={"N": dim(0), "C": dim(1), "H": dim(2), "W": dim(3), "F": lambda p, v: {**p, "filters": v}},
    impls=(
        Builtin("fast", "cnncheck.layers.sandwich:conv_relu_pool_forward",
                "cnncheck.layers.sandwich:conv_relu_pool_backward", "kernels"),
        Builtin("torch", "cnncheck.layers.torch_extra:conv_relu_pool_forward",
                "cnncheck.layers.torch_extra:conv_relu_pool_backward", "torch", "torch"),
    ),
)
