"""Classification losses with the course notebook's names: softmax (cross-entropy) and multiclass SVM.

Both take class scores and integer labels and return the loss averaged over
the batch together with its gradient::

    loss, dx = softmax_loss(x, y)
    loss, dx = svm_loss(x, y)

Loop-free numpy; x and y are never modified.  dx keeps x's dtype (float32
stays float32, anything else is float64) and the loss is a Python float.
Bad shapes or labels raise :class:`cnncheck.errors.CnnCheckError` (a
``ValueError``) naming the problem.
"""

from __future__ import annotations

import numpy as np

from cnncheck.errors import CnnCheckError
from cnncheck.layers.naive import as_float_array


def check_scores_labels(x, y, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate scores (N, C) and labels (N,) with integer values in [0, C).

    Returns
    -------
    (x, y) : float scores and int64 labels
    """
    x = as_float_array(x, "x")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise CnnCheckError(f"{loss}: x must be scores of shape (N, C) with N, C >= 1, got {x.shape}")
    N, C = x.shape
    y = np.asarray(y)
    if y.shape != (N,):
        raise CnnCheckError(f"{loss}: y must be labels of shape ({N},), one per row of x, got {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise CnnCheckError(f"{loss}: y must hold integer class labels, got dtype {y.dtype}; "
                            "convert with y.astype(int)")
    if y.min() < 0 or y.max() >= C:
        raise CnnCheckError(f"{loss}: labels must be in [0, {C}) for {C} classes, got values from "
                            f"{y.min()} to {y.max()}")
    return x, y.astype(np.int64, copy=False)


def softmax_loss(x, y):
    """Softmax cross-entropy loss, averaged over the batch.

    ``loss = -mean_i log(softmax(x_i)[y_i])``, computed with each row shifted
    by its maximum first (the result is the same and exp cannot overflow)::

        log_probs = (x - max) - log(sum(exp(x - max)))
        dx = (exp(log_probs) - onehot(y)) / N

    Parameters
    ----------
    x : ndarray, shape (N, C), float64 or float32
        Class scores.
    y : ndarray, shape (N,), int
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of x
    """
    x, y = check_scores_labels(x, y, "softmax loss")
    N = x.shape[0]
    rows = np.arange(N)
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dx = np.exp(log_probs)
    dx[rows, y] -= 1
    dx /= N
    return float(loss), dx


def svm_loss(x, y):
    """Multiclass SVM (hinge) loss with margin 1, averaged over the batch.

    ``loss = mean_i sum_{j != y_i} max(0, x_ij - x_iy_i + 1)``.  Each positive
    margin adds 1/N to ``dx[i, j]`` and takes 1/N from ``dx[i, y_i]``; a margin
    of exactly 0 counts as not positive (gradient 0 at the kink).

    Parameters
    ----------
    x : ndarray, shape (N, C), float64 or float32
        Class scores.
    y : ndarray, shape (N,), int
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of x
    """
    x, y = check_scores_labels(x, y, "svm loss")
    N = x.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + x.dtype.type(1))
    margins[rows, y] = 0
    loss = margins.sum() / N
    positive = margins > 0
    dx = positive.astype(x.dtype)
    dx[rows, y] -= positive.sum(axis=1)
    dx /= N
    return float(loss), dx
