"""Multiclass SVM loss summed over the batch instead of averaged.

Bug: neither the loss nor dx is divided by N; they agree with each other, so
centred differences pass.
"""

import numpy as np


def svm_loss(x, y):
    N = x.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + 1.0)
    margins[rows, y] = 0
    loss = margins.sum()                 # missing: / N
    positive = (margins > 0).astype(x.dtype)
    positive[rows, y] = -positive.sum(axis=1)
    return loss, positive                # missing: / N
