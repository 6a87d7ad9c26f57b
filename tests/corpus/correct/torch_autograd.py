"""Every layer delegates to PyTorch: the forward pass runs torch.nn.functional
on tensors made from the numpy inputs, and the backward pass reruns the
forward with requires_grad and asks torch.autograd.grad for the gradients,
contracted with dout. Results go back to numpy arrays."""

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(a, grad=False):
    arr = np.ascontiguousarray(a)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return torch.tensor(arr, requires_grad=grad)


def _numpy(t):
    return t.detach().cpu().numpy()


def _affine(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b


def _grads(fn, inputs, dout):
    ts = [_tensor(a, grad=True) for a in inputs]
    with torch.enable_grad():
        out = fn(*ts)
        gout = _tensor(dout).to(out.dtype)
        grads = torch.autograd.grad(out, ts, grad_outputs=gout, allow_unused=True)
    return [np.zeros(np.shape(a)) if g is None else _numpy(g) for g, a in zip(grads, inputs)]


def affine_forward(x, w, b):
    with torch.no_grad():
        out = _affine(_tensor(x), _tensor(w), _tensor(b))
    return _numpy(out), (x, w, b)


def affine_backward(dout, cache):
    dx, dw, db = _grads(_affine, cache, dout)
    return dx, dw, db


def relu_forward(x):
    with torch.no_grad():
        out = torch.relu(_tensor(x))
    return _numpy(out), x


def relu_backward(dout, cache):
    return _grads(torch.relu, [cache], dout)[0]


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    with torch.no_grad():
        out = F.conv2d(_tensor(x), _tensor(w), _tensor(b), stride=s, padding=p)
    return _numpy(out), (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    dx, dw, db = _grads(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=s, padding=p), [x, w, b], dout)
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    k = (pool_param['pool_height'], pool_param['pool_width'])
    s = pool_param['stride']
    with torch.no_grad():
        out = F.max_pool2d(_tensor(x), kernel_size=k, stride=s)
    return _numpy(out), (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    k = (pool_param['pool_height'], pool_param['pool_width'])
    s = pool_param['stride']
    return _grads(lambda t: F.max_pool2d(t, kernel_size=k, stride=s), [x], dout)[0]
