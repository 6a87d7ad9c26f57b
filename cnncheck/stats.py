"""Summary statistics over the timed runs of one benchmark.

Times are seconds per call.  The median leads: it is what tables show and what
``--compare`` holds a run to, because one slow run (a page fault, another
process) moves the mean but not the median.  The spread is the interquartile
range; a run whose IQR is a large share of its median is flagged ``noisy``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

#: IQR / median above which a measurement is flagged noisy.
NOISY_RATIO = 0.2


@dataclass(frozen=True)
class Stats:
    """Order statistics of a list of run times.

    Quartiles use linear interpolation between order statistics (numpy's
    default ``percentile`` method, ``statistics.quantiles(method="inclusive")``),
    so one run gives ``q1 == median == q3`` and an IQR of 0.

    Attributes
    ----------
    rounds : int
        Number of runs summarised.
    min, max, median, mean, q1, q3, iqr, stddev : float
        Seconds; ``iqr = q3 - q1``; ``stddev`` is the sample standard
        deviation (0 for a single run).
    """

    rounds: int
    min: float
    max: float
    median: float
    mean: float
    q1: float
    q3: float
    iqr: float
    stddev: float

    @classmethod
    def from_times(cls, times: Iterable[float]) -> Stats:
        """Summarise run times.

        Parameters
        ----------
        times : iterable of float
            Seconds per call, one per run; at least one, all finite and >= 0.

        Returns
        -------
        Stats
        """
        data = sorted(float(t) for t in times)
        if not data:
            raise ValueError("Stats needs at least one time")
        if any(not math.isfinite(t) or t < 0 for t in data):
            raise ValueError(f"times must be finite and non-negative, got {data}")
        if len(data) == 1:
            q1 = median = q3 = data[0]
            stddev = 0.0
        else:
            q1, median, q3 = statistics.quantiles(data, n=4, method="inclusive")
            stddev = statistics.stdev(data)
        return cls(
            rounds=len(data),
            min=data[0],
            max=data[-1],
            median=median,
            mean=statistics.fmean(data),
            q1=q1,
            q3=q3,
            iqr=q3 - q1,
            stddev=stddev,
        )

    @property
    def iqr_ratio(self) -> float:
        """IQR as a fraction of the median (0 when the median is 0)."""
        return self.iqr / self.median if self.median > 0 else 0.0

    @property
    def noisy(self) -> bool:
        """True when the IQR exceeds :data:`NOISY_RATIO` of the median."""
        return self.iqr_ratio > NOISY_RATIO

    def to_dict(self) -> dict:
        """JSON-ready dict of every field plus ``noisy``."""
        return {
            "rounds": self.rounds,
            "min": self.min,
            "max": self.max,
            "median": self.median,
            "mean": self.mean,
            "q1": self.q1,
            "q3": self.q3,
            "iqr": self.iqr,
            "stddev": self.stddev,
            "noisy": self.noisy,
        }
