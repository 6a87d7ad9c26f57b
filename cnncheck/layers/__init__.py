"""The layer API courses use, with the course notebook's names and signatures.

Naive (loop) references and fast (im2col) implementations; see
:mod:`cnncheck.layers.naive` and :mod:`cnncheck.layers.fast`.
"""

from cnncheck.layers.fast import (
    BACKEND,
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
    relu_backward_fast,
    relu_forward_fast,
)
from cnncheck.layers.naive import (
    affine_backward,
    affine_forward,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)

__all__ = [
    "BACKEND",
    "affine_backward",
    "affine_forward",
    "conv_backward_fast",
    "conv_backward_naive",
    "conv_forward_fast",
    "conv_forward_naive",
    "max_pool_backward_fast",
    "max_pool_backward_naive",
    "max_pool_forward_fast",
    "max_pool_forward_naive",
    "relu_backward",
    "relu_backward_fast",
    "relu_forward",
    "relu_forward_fast",
]
