"""The benchmark's pure helpers (its figures come from ``python -m experiments.bench``, not tests)."""
from __future__ import annotations

import pytest

from experiments.bench import parse_scales, per_day_costs, worst_growth


def test_parse_scales_reads_members_and_optional_days():
    assert parse_scales("10000, 1000000:0.25", days=1.0) == [(10000, 1.0), (1000000, 0.25)]
    with pytest.raises(ValueError, match="MEMBERS"):
        parse_scales("0", days=1.0)


def test_per_day_costs_splits_at_day_boundaries_and_leaves_out_a_partial_last_day():
    # (simulated minute, impressions so far, wall seconds): 2 µs per impression on day 1,
    # 4 µs on day 2, 8 µs on the half day after it (not a whole day: left out).
    marks = [(0.0, 0, 0.0), (720.0, 500_000, 1.0), (1440.0, 1_000_000, 2.0),
             (2880.0, 2_000_000, 6.0), (3600.0, 2_500_000, 10.0)]
    assert per_day_costs(marks) == pytest.approx([2.0, 4.0])


def test_worst_growth_catches_a_rise_after_a_fall():
    assert worst_growth([8.0, 4.0, 2.0]) == pytest.approx(0.5)
    assert worst_growth([8.0, 4.0, 6.0]) == pytest.approx(1.5)
    assert worst_growth([3.0]) == 1.0
