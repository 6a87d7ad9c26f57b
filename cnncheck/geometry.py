"""Output-size arithmetic and geometry validation shared by layers and specs.

Sizes follow the floor rule PyTorch uses::

    H_out = 1 + (H + 2*pad - HH) // stride
    W_out = 1 + (W + 2*pad - WW) // stride

Trailing rows and columns that no window reaches are ignored by the forward
pass and get zero gradient in the backward pass.  Every function here raises
:class:`cnncheck.errors.CnnCheckError` (a ``ValueError``) with a message that
names the offending value; none of them touch array data.
"""

from __future__ import annotations

import operator

from cnncheck.errors import CnnCheckError


def _as_int(value, name: str) -> int:
    """Return ``value`` as a Python int, refusing floats, bools and strings."""
    if isinstance(value, bool):
        raise CnnCheckError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CnnCheckError(f"{name} must be an integer, got {value!r}") from None


def check_stride_pad(stride, pad) -> tuple[int, int]:
    """Validate a stride (>= 1) and a zero-padding width (>= 0).

    Returns
    -------
    (stride, pad) : tuple of int
    """
    stride = _as_int(stride, "stride")
    pad = _as_int(pad, "pad")
    if stride < 1:
        raise CnnCheckError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise CnnCheckError(f"pad must be >= 0, got {pad}")
    return stride, pad


def conv_output_shape(x_shape, w_shape, stride, pad) -> tuple[int, int, int, int]:
    """Validate a convolution's geometry and return its output shape.

    Parameters
    ----------
    x_shape : tuple of int, (N, C, H, W)
    w_shape : tuple of int, (F, C, HH, WW)
    stride : int, >= 1
    pad : int, >= 0 (zero padding on every side)

    Returns
    -------
    (N, F, H_out, W_out) : tuple of int
        ``H_out = 1 + (H + 2*pad - HH) // stride``, likewise for W.
    """
    stride, pad = check_stride_pad(stride, pad)
    x_shape = tuple(x_shape)
    w_shape = tuple(w_shape)
    if len(x_shape) != 4:
        raise CnnCheckError(f"conv x must have shape (N, C, H, W), got {len(x_shape)} dimensions {x_shape}")
    if len(w_shape) != 4:
        raise CnnCheckError(f"conv w must have shape (F, C, HH, WW), got {len(w_shape)} dimensions {w_shape}")
    N, C, H, W = x_shape
    F, Cw, HH, WW = w_shape
    if min(x_shape) < 1:
        raise CnnCheckError(f"conv x has an empty dimension: {x_shape}")
    if min(w_shape) < 1:
        raise CnnCheckError(f"conv w has an empty dimension: {w_shape}")
    if C != Cw:
        raise CnnCheckError(f"channel mismatch: x has C={C} channels but w expects {Cw} (w shape {w_shape})")
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise CnnCheckError(
            f"kernel {HH}x{WW} is larger than the padded input {H + 2 * pad}x{W + 2 * pad} "
            f"(H={H}, W={W}, pad={pad}); use a smaller kernel or more padding"
        )
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    return N, F, H_out, W_out


def pool_output_shape(x_shape, pool_height, pool_width, stride) -> tuple[int, int, int, int]:
    """Validate a max-pooling geometry (no padding) and return its output shape.

    Parameters
    ----------
    x_shape : tuple of int, (N, C, H, W)
    pool_height, pool_width : int, >= 1 and no larger than H and W
    stride : int, >= 1

    Returns
    -------
    (N, C, H_out, W_out) : tuple of int
        ``H_out = 1 + (H - pool_height) // stride``, likewise for W.
    """
    ph = _as_int(pool_height, "pool_height")
    pw = _as_int(pool_width, "pool_width")
    stride = _as_int(stride, "stride")
    if stride < 1:
        raise CnnCheckError(f"stride must be >= 1, got {stride}")
    if ph < 1 or pw < 1:
        raise CnnCheckError(f"pool window must be at least 1x1, got {ph}x{pw}")
    x_shape = tuple(x_shape)
    if len(x_shape) != 4:
        raise CnnCheckError(f"pool x must have shape (N, C, H, W), got {len(x_shape)} dimensions {x_shape}")
    N, C, H, W = x_shape
    if min(x_shape) < 1:
        raise CnnCheckError(f"pool x has an empty dimension: {x_shape}")
    if ph > H or pw > W:
        raise CnnCheckError(f"pool window {ph}x{pw} is larger than the input {H}x{W}")
    return N, C, 1 + (H - ph) // stride, 1 + (W - pw) // stride


def affine_output_shape(x_shape, w_shape, b_shape=None) -> tuple[int, int]:
    """Validate an affine layer's shapes and return its output shape.

    Parameters
    ----------
    x_shape : tuple of int, (N, d_1, ..., d_k); flattened to (N, D)
    w_shape : tuple of int, (D, M)
    b_shape : tuple of int, (M,), optional

    Returns
    -------
    (N, M) : tuple of int
    """
    x_shape = tuple(x_shape)
    w_shape = tuple(w_shape)
    if len(x_shape) < 2:
        raise CnnCheckError(f"affine x must have shape (N, d_1, ..., d_k), got {len(x_shape)} dimension(s) {x_shape}")
    if len(w_shape) != 2:
        raise CnnCheckError(f"affine w must have shape (D, M), got {w_shape}")
    D = 1
    for d in x_shape[1:]:
        D *= d
    if w_shape[0] != D:
        raise CnnCheckError(f"affine w has {w_shape[0]} rows but x flattens to D={D} features (x shape {x_shape})")
    if b_shape is not None and tuple(b_shape) != (w_shape[1],):
        raise CnnCheckError(f"affine b must have shape ({w_shape[1]},), got {tuple(b_shape)}")
    return x_shape[0], w_shape[1]
