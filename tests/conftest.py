"""Shared fixtures: a seeded random generator and the Hypothesis profiles."""

from __future__ import annotations

import os

import numpy as np
import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # property tests skip themselves without hypothesis
    settings = None

if settings is not None:
    # No deadline: the first call of a layer may be slow (imports, page faults)
    # and timing is not what the properties check.
    settings.register_profile(
        "default",
        deadline=None,
        max_examples=60,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # Reproducible runs for CI: the same examples every time.
    settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
    settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded identically for every test."""
    return np.random.default_rng(231)
