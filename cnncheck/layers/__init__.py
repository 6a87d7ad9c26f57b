"""The layer API courses use, with the course notebook's names and signatures.

Naive (loop) references and fast (im2col) implementations of the four basic
layers (:mod:`cnncheck.layers.naive`, :mod:`cnncheck.layers.fast`); batch,
layer, spatial batch and spatial group normalisation
(:mod:`cnncheck.layers.norm`); inverted dropout
(:mod:`cnncheck.layers.dropout`); the softmax and SVM losses
(:mod:`cnncheck.layers.losses`); and the sandwich layers that chain them
(:mod:`cnncheck.layers.sandwich`).
"""

from cnncheck.layers.dropout import dropout_backward, dropout_forward
from cnncheck.layers.fast import (
    BACKEND,
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
    relu_backward_fast,
    relu_forward_fast,
)
from cnncheck.layers.losses import softmax_loss, svm_loss
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
from cnncheck.layers.norm import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from cnncheck.layers.sandwich import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_ln_relu_backward,
    affine_ln_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)

__all__ = [
    "BACKEND",
    "affine_backward",
    "affine_bn_relu_backward",
    "affine_bn_relu_forward",
    "affine_forward",
    "affine_ln_relu_backward",
    "affine_ln_relu_forward",
    "affine_relu_backward",
    "affine_relu_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "batchnorm_forward",
    "conv_backward_fast",
    "conv_backward_naive",
    "conv_forward_fast",
    "conv_forward_naive",
    "conv_relu_backward",
    "conv_relu_forward",
    "conv_relu_pool_backward",
    "conv_relu_pool_forward",
    "dropout_backward",
    "dropout_forward",
    "layernorm_backward",
    "layernorm_forward",
    "max_pool_backward_fast",
    "max_pool_backward_naive",
    "max_pool_forward_fast",
    "max_pool_forward_naive",
    "relu_backward",
    "relu_backward_fast",
    "relu_forward",
    "relu_forward_fast",
    "softmax_loss",
    "spatial_batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_groupnorm_backward",
    "spatial_groupnorm_forward",
    "svm_loss",
]
