"""Stats against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from cnncheck.stats import NOISY_RATIO, Stats


def test_four_values_hand_computed():
    # sorted 1, 2, 3, 4: positions (n-1)*p -> q1 at 0.75 (1.75), median at 1.5 (2.5), q3 at 2.25 (3.25)
    s = Stats.from_times([4.0, 1.0, 3.0, 2.0])
    assert s.rounds == 4
    assert (s.min, s.max) == (1.0, 4.0)
    assert s.median == pytest.approx(2.5)
    assert s.mean == pytest.approx(2.5)
    assert s.q1 == pytest.approx(1.75)
    assert s.q3 == pytest.approx(3.25)
    assert s.iqr == pytest.approx(1.5)
    # sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    assert s.stddev == pytest.approx(math.sqrt(5 / 3))


def test_five_values_with_an_outlier_leaves_the_median():
    # 10, 11, 12, 13, 100: median 12, q1 at position 1 (11), q3 at position 3 (13)
    s = Stats.from_times([10, 100, 12, 11, 13])
    assert s.median == 12
    assert s.q1 == 11
    assert s.q3 == 13
    assert s.iqr == 2
    assert s.mean == pytest.approx(29.2)
    assert s.max == 100


def test_one_run():
    s = Stats.from_times([0.25])
    assert s.rounds == 1
    assert s.min == s.max == s.median == s.q1 == s.q3 == s.mean == 0.25
    assert s.iqr == 0 and s.stddev == 0
    assert not s.noisy


def test_two_runs_interpolate():
    # positions 0.25, 0.5, 0.75 between 1 and 3
    s = Stats.from_times([3.0, 1.0])
    assert (s.q1, s.median, s.q3) == pytest.approx((1.5, 2.0, 2.5))


def test_noisy_flag_threshold():
    quiet = Stats.from_times([1.0, 1.0, 1.0, 1.0])
    assert quiet.iqr_ratio == 0 and not quiet.noisy
    # 1, 2, 3, 4: iqr 1.5, median 2.5 -> ratio 0.6
    loud = Stats.from_times([1.0, 2.0, 3.0, 4.0])
    assert loud.iqr_ratio == pytest.approx(0.6)
    assert loud.noisy
    # just under the threshold: 1, 1, 1+2r/1.5 ... use a spread whose IQR/median is exactly below it
    below = Stats.from_times([1.0, 1.0, 1.0 + NOISY_RATIO, 1.0 + NOISY_RATIO])
    # q1 = 1, q3 = 1 + r, median = 1 + r/2 -> ratio r / (1 + r/2) < r
    assert not below.noisy


def test_zero_median_is_not_noisy():
    s = Stats.from_times([0.0, 0.0, 0.0])
    assert s.iqr_ratio == 0.0 and not s.noisy


@pytest.mark.parametrize("times", [[], [1.0, float("nan")], [-1.0], [float("inf")]])
def test_rejects_bad_times(times):
    with pytest.raises(ValueError):
        Stats.from_times(times)


def test_to_dict_has_every_field():
    d = Stats.from_times([1.0, 2.0, 3.0, 4.0]).to_dict()
    assert d == {
        "rounds": 4, "min": 1.0, "max": 4.0, "median": 2.5, "mean": 2.5, "q1": 1.75, "q3": 3.25,
        "iqr": 1.5, "stddev": pytest.approx(math.sqrt(5 / 3)), "noisy": True,
    }
