"""cnncheck.geometry: output-size formulas and the messages of bad geometry."""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck import geometry
from cnncheck.errors import CnnCheckError


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "pad", "expected"),
    [
        ((2, 3, 4, 4), (3, 3, 4, 4), 2, 1, (2, 3, 2, 2)),  # the course notebook's forward example
        ((4, 3, 5, 5), (2, 3, 3, 3), 2, 1, (4, 2, 3, 3)),  # the course notebook's gradient check
        ((100, 3, 31, 31), (25, 3, 3, 3), 2, 1, (100, 25, 16, 16)),  # the course notebook's timing case
        ((1, 1, 6, 6), (1, 1, 3, 3), 2, 0, (1, 1, 2, 2)),  # floor: last row uncovered
        ((1, 2, 7, 5), (4, 2, 3, 1), 3, 2, (1, 4, 3, 3)),  # non-square
        ((1, 1, 1, 1), (1, 1, 3, 3), 1, 1, (1, 1, 1, 1)),
    ],
)
def test_conv_output_shape(x_shape, w_shape, stride, pad, expected):
    assert geometry.conv_output_shape(x_shape, w_shape, stride, pad) == expected


def test_conv_output_shape_accepts_numpy_integers():
    assert geometry.conv_output_shape((1, 1, 4, 4), (1, 1, 2, 2), np.int64(2), np.int32(0)) == (1, 1, 2, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((1, 1, 4), (1, 1, 2, 2), 1, 0), "N, C, H, W"),
        (((1, 1, 4, 4), (1, 2, 2), 1, 0), "F, C, HH, WW"),
        (((1, 3, 4, 4), (1, 2, 2, 2), 1, 0), "channel mismatch"),
        (((1, 1, 4, 4), (1, 1, 7, 2), 1, 1), "larger than the padded input 6x6"),
        (((1, 1, 4, 4), (1, 1, 2, 2), 0, 0), "stride must be >= 1"),
        (((1, 1, 4, 4), (1, 1, 2, 2), 1, -1), "pad must be >= 0"),
        (((1, 1, 4, 4), (1, 1, 2, 2), 1.0, 0), "stride must be an integer"),
        (((1, 1, 4, 4), (1, 1, 2, 2), True, 0), "stride must be an integer"),
        (((1, 1, 4, 4), (1, 1, 2, 2), 1, "1"), "pad must be an integer"),
        (((0, 1, 4, 4), (1, 1, 2, 2), 1, 0), "empty dimension"),
        (((1, 1, 4, 4), (0, 1, 2, 2), 1, 0), "empty dimension"),
    ],
)
def test_conv_bad_geometry(args, message):
    with pytest.raises(CnnCheckError, match=message):
        geometry.conv_output_shape(*args)


@pytest.mark.parametrize(
    ("x_shape", "ph", "pw", "stride", "expected"),
    [
        ((2, 2, 2, 2), 2, 2, 2, (2, 2, 1, 1)),
        ((3, 2, 8, 8), 2, 2, 2, (3, 2, 4, 4)),
        ((1, 1, 7, 5), 3, 2, 2, (1, 1, 3, 2)),
        ((1, 1, 5, 5), 5, 5, 1, (1, 1, 1, 1)),
    ],
)
def test_pool_output_shape(x_shape, ph, pw, stride, expected):
    assert geometry.pool_output_shape(x_shape, ph, pw, stride) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((1, 4, 4), 2, 2, 2), "N, C, H, W"),
        (((1, 1, 4, 4), 5, 2, 2), "larger than the input 4x4"),
        (((1, 1, 4, 4), 2, 5, 2), "larger than the input"),
        (((1, 1, 4, 4), 0, 2, 2), "at least 1x1"),
        (((1, 1, 4, 4), 2, 2, 0), "stride must be >= 1"),
        (((1, 1, 4, 4), 2.5, 2, 2), "pool_height must be an integer"),
        (((1, 0, 4, 4), 2, 2, 2), "empty dimension"),
    ],
)
def test_pool_bad_geometry(args, message):
    with pytest.raises(CnnCheckError, match=message):
        geometry.pool_output_shape(*args)


def test_affine_output_shape_flattens_trailing_dimensions():
    assert geometry.affine_output_shape((4, 2, 3, 5), (30, 7), (7,)) == (4, 7)
    assert geometry.affine_output_shape((4, 32), (32, 2)) == (4, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((4,), (4, 2)), "N, d_1"),
        (((4, 32), (32, 2, 1)), r"\(D, M\)"),
        (((4, 32), (31, 2)), "D=32"),
        (((4, 32), (32, 2), (3,)), r"b must have shape \(2,\)"),
    ],
)
def test_affine_bad_shapes(args, message):
    with pytest.raises(CnnCheckError, match=message):
        geometry.affine_output_shape(*args)


def test_errors_are_value_errors():
    assert issubclass(CnnCheckError, ValueError)
