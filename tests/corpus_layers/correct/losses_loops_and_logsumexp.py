"""Softmax and SVM losses written with per-sample loops, and right.

The softmax uses a hand-written log-sum-exp per row (shifted by the row's
maximum); the SVM loss counts positive margins in a double loop and returns
a Python float.
"""

import math

import numpy as np


def softmax_loss(x, y):
    N, C = x.shape
    loss = 0.0
    dx = np.zeros_like(x)
    for i in range(N):
        top = x[i].max()
        lse = top + math.log(sum(math.exp(v - top) for v in x[i]))
        loss += lse - x[i, y[i]]
        dx[i] = np.exp(x[i] - lse)
        dx[i, y[i]] -= 1.0
    return loss / N, dx / N


def svm_loss(x, y):
    N, C = x.shape
    loss = 0.0
    dx = np.zeros_like(x)
    for i in range(N):
        for j in range(C):
            if j == y[i]:
                continue
            margin = x[i, j] - x[i, y[i]] + 1.0
            if margin > 0:
                loss += margin
                dx[i, j] += 1.0
                dx[i, y[i]] -= 1.0
    return float(loss / N), dx / N
