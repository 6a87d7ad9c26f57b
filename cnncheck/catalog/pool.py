"""Max pooling: ``max_pool_forward_naive(x, pool_param)`` and its fast twin.

x (N, C, H, W), ``pool_param = {'pool_height': ph, 'pool_width': pw,
'stride': s}``; out (N, C, H_out, W_out) with ``H_out = 1 + (H - ph) // s``.
"""

from __future__ import annotations

import numpy as np

from cnncheck.catalog._inputs import distinct_in_windows, randn, shape_dim, tied
from cnncheck.errors import CnnCheckError
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


def output_shape(p) -> tuple:
    N, C, H, W = p["shape"]
    s = p["stride"]
    return (N, C, 1 + (H - p["pool_height"]) // s, 1 + (W - p["pool_width"]) // s)


def check(p) -> None:
    N, C, H, W = p["shape"]
    if p["pool_height"] > H or p["pool_width"] > W:
        raise CnnCheckError(f"pool window {p['pool_height']}x{p['pool_width']} is larger than the input {H}x{W}")


def build(p, rng, dtype, margin, kinks) -> Sample:
    if kinks:
        x = tied(rng, p["shape"], dtype)
    else:
        x = distinct_in_windows(rng, p["shape"], p["pool_height"], p["pool_width"], dtype, margin)
    param = {"pool_height": p["pool_height"], "pool_width": p["pool_width"], "stride": p["stride"]}
    return Sample({"x": x, "pool_param": param}, randn(rng, output_shape(p), dtype))


def shapes(p) -> dict:
    N, C, H_out, W_out = output_shape(p)
    return {"x": p["shape"], "out": output_shape(p),
            "workspace": (2 * N * C * p["pool_height"] * p["pool_width"] * H_out * W_out,)}


def bytes_moved(p, itemsize: int) -> tuple:
    n_in = int(np.prod(p["shape"])) * itemsize
    n_out = int(np.prod(output_shape(p))) * itemsize
    return n_in + n_out, n_in + n_out


def subgradient(sample: Sample, p, grads) -> str | None:
    """Each window sends its whole ``dout`` to its maxima, and nothing elsewhere.

    Only for windows that do not overlap (stride >= window); with overlapping
    windows the share of each is not identifiable and nothing is judged.
    """
    ph, pw, s = p["pool_height"], p["pool_width"], p["stride"]
    if s < ph or s < pw:
        return None
    single = np.float32 in (np.asarray(sample.values["x"]).dtype, np.asarray(grads[0]).dtype)
    x = np.asarray(sample.values["x"], dtype=np.float64)
    dout = np.asarray(sample.dout, dtype=np.float64)
    dx = np.asarray(grads[0], dtype=np.float64)
    N, C, H_out, W_out = dout.shape
    covered = np.zeros(x.shape, dtype=bool)
    scale = max(1.0, float(np.max(np.abs(dout))))
    tol = (1e-5 if single else 1e-9) * scale
    for i in range(H_out):
        for j in range(W_out):
            rows, cols = slice(i * s, i * s + ph), slice(j * s, j * s + pw)
            covered[:, :, rows, cols] = True
            window = x[:, :, rows, cols]
            g = dx[:, :, rows, cols]
            top = window == window.max(axis=(2, 3), keepdims=True)
            total = g.sum(axis=(2, 3))
            off = np.abs(np.where(top, 0.0, g)).max(axis=(2, 3))
            for n, c in zip(*np.nonzero(np.abs(total - dout[:, :, i, j]) > tol)):
                ties = int(top[n, c].sum())
                return (f"the window out[{n}, {c}, {i}, {j}] ({ties} tied maxima) sends {total[n, c]:.6g} "
                        f"to its inputs but its dout is {dout[n, c, i, j]:.6g}: a max-pool backward must route "
                        f"each window's dout to its maxima in total (to one of them, or split), never to "
                        f"each tied maximum in full")
            for n, c in zip(*np.nonzero(off > tol)):
                return (f"the window out[{n}, {c}, {i}, {j}] sends gradient to an element that is not its "
                        f"maximum")
    stray = np.abs(np.where(covered, 0.0, dx))
    if stray.max(initial=0.0) > tol:
        index = tuple(int(k) for k in np.unravel_index(int(np.argmax(stray)), dx.shape))
        return f"dx{list(index)} lies in no pooling window but gets gradient {dx[index]:.6g}"
    return None


SPEC = LayerSpec(
    name="pool",
    title="Max pooling",
    functions={"": ("max_pool_forward_naive", "max_pool_backward_naive"),
               "fast": ("max_pool_forward_fast", "max_pool_backward_fast")},
    inputs=(Input("x"), Input("pool_param", "config")),
    params=(
        Param("shape", "shape", (3, 2, 8, 8), "input shape N,C,H,W", bench=(100, 3, 32, 32), ndim=(4,)),
        Param("pool_height", "int", 2, "pooling window height", minimum=1),
        Param("pool_width", "int", 2, "pooling window width", minimum=1),
        Param("stride", "int", 2, "stride of the window", minimum=1),
    ),
    build=build,
    output_shape=output_shape,
    shapes=shapes,
    geometries=(
        Geometry("notebook", {}, "the course notebook's check: x (3, 2, 8, 8), 2x2 windows, stride 2"),
        Geometry("overlap", {"shape": (2, 3, 7, 9), "pool_height": 3, "pool_width": 3, "stride": 2},
                 "overlapping 3x3 windows, stride 2, H != W"),
        Geometry("nonsquare", {"shape": (1, 1, 6, 8), "pool_height": 2, "pool_width": 3, "stride": 1},
                 "a 2x3 window, stride 1, N = 1, C = 1"),
        Geometry("gaps", {"shape": (2, 4, 9, 5), "pool_height": 3, "pool_width": 2, "stride": 3},
                 "a 3x2 window, stride 3 (not the window's size), C = 4"),
        Geometry("floor", {"shape": (2, 2, 7, 9), "pool_height": 2, "pool_width": 2, "stride": 3},
                 "sizes that do not divide evenly: H_out = 1 + 5 // 3 (floor); refusing them is allowed",
                 uneven=True),
    ),
    reference="naive",
    subgradient=subgradient,
    bytes=bytes_moved,
    check=check,
    sweep={"N": shape_dim(0), "C": shape_dim(1), "H": shape_dim(2), "W": shape_dim(3),
           "K": lambda p, v: {**p, "pool_height": v, "pool_width": v}},
    impls=(
        Builtin("naive", "cnncheck.layers.naive:max_pool_forward_naive", "cnncheck.layers.naive:max_pool_backward_naive",
                "python loops"),
        Builtin("fast", "cnncheck.layers.fast:max_pool_forward_fast", "cnncheck.layers.fast:max_pool_backward_fast",
                "kernels"),
        Builtin("torch", "cnncheck.layers.torch_impl:max_pool_forward", "cnncheck.layers.torch_impl:max_pool_backward",
                "torch", "torch"),
    ),
)
