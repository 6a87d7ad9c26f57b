# Temporary scaffolding so the package imports while the im2col layers are written.
from cnncheck.layers.naive import conv_forward_naive as conv_forward_fast, conv_backward_naive as conv_backward_fast
from cnncheck.layers.naive import max_pool_forward_naive as max_pool_forward_fast
from cnncheck.layers.naive import max_pool_backward_naive as max_pool_backward_fast
BACKEND = "numpy"
