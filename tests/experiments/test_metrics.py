"""The metric table (:mod:`sim.metrics`): a metric declared once is computed, written, charted and
reported; the built-ins keep metrics.json's keys; the README's metric example runs as printed."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sim.metrics import METRICS, Z95, MetricsAccumulator, RatioMetric, build_metrics
from sim.schema import ConfigError
from tests.readme_examples import readme_block

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Metrics declared in a test are forgotten afterwards (the registry is process-wide)."""
    monkeypatch.setattr(METRICS, "_classes", dict(METRICS.classes))


def two_cell_accumulator() -> tuple[MetricsAccumulator, np.ndarray]:
    """Members 0, 1 in cell 'a' (3 visits, 3 impressions, 1 quality play); members 2, 3 in cell
    'b' (3 visits, 3 impressions, 2 quality plays); one 60-minute bucket."""
    acc = MetricsAccumulator(4, ["a", "b"], horizon_minutes=60.0, bucket_minutes=60.0)
    acc.add_visits(np.array([0, 0, 1, 2, 2, 3]), np.array([0, 0, 0, 1, 1, 1]),
                   np.array([10.0, 20, 30, 40, 50, 55]))
    served_a = SimpleNamespace(click=np.array([1, 0, 1]), play=np.array([1, 0, 0]),
                               quality_play=np.array([1, 0, 0]), minutes=np.array([30.0, 0, 0]),
                               expected_take=np.full(3, 0.1), oracle_take=np.full(3, 0.2),
                               uniform_take=np.full(3, 0.1), varied=np.ones(3, bool),
                               varied_quality_play=np.array([1, 0, 0]))
    acc.add_impressions(np.array([0, 0, 1]), 0, np.array([10.0, 20, 30]), served_a)
    served_b = SimpleNamespace(click=np.array([1, 1, 0]), play=np.array([1, 1, 0]),
                               quality_play=np.array([1, 1, 0]), minutes=np.array([40.0, 50, 0]),
                               expected_take=np.full(3, 0.3), oracle_take=np.full(3, 0.3),
                               uniform_take=np.full(3, 0.1), varied=np.ones(3, bool),
                               varied_quality_play=np.array([1, 1, 0]))
    acc.add_impressions(np.array([2, 2, 3]), 1, np.array([40.0, 50, 55]), served_b)
    return acc, np.array([0, 0, 1, 1])


def test_blocks_of_one_array_combine_without_a_copy_and_others_by_concatenation():
    """A shard's blocks accumulate into slices of one array: combining them returns that array
    (no second copy of the largest array of a run); blocks from elsewhere are concatenated."""
    from sim.metrics import MEMBER_COLUMNS

    rows = np.zeros((5, len(MEMBER_COLUMNS)))
    parts = [MetricsAccumulator(n, ["a"], 60.0, 60.0, member_offset=lo, per_member=rows[lo:lo + n])
             for lo, n in ((0, 2), (2, 3))]
    for p in parts:
        p.add_visits(np.arange(p.member_offset, p.member_offset + p.per_member.shape[0]),
                     np.zeros(p.per_member.shape[0], int), np.full(p.per_member.shape[0], 5.0))
    joined = MetricsAccumulator.combine(parts)
    assert joined.per_member is rows and rows[:, MEMBER_COLUMNS.index("visits")].tolist() == [1.0] * 5
    # Out of order, or a part that is not a slice of the array: a concatenated copy, same rows.
    for shuffled in ([parts[1], parts[0]],
                     [parts[0], MetricsAccumulator(3, ["a"], 60.0, 60.0, member_offset=2)]):
        other = MetricsAccumulator.combine(shuffled)
        assert not np.shares_memory(other.per_member, rows)
        assert np.array_equal(other.per_member, np.concatenate([p.per_member for p in shuffled]))
    # Slices of an array of another shape (a reshaped view): concatenated, never its base.
    k = len(MEMBER_COLUMNS)
    odd = MetricsAccumulator(5, ["a"], 60.0, 60.0, per_member=np.zeros((5, 2 * k)).reshape(10, k)[:5])
    assert MetricsAccumulator.combine([odd]).per_member.shape == (5, k)
    with pytest.raises(ValueError, match="per_member must have shape"):
        MetricsAccumulator(4, ["a"], 60.0, 60.0, per_member=rows[:2])


def test_z95_is_the_two_sided_95_percent_normal_quantile():
    assert Z95 == pytest.approx(1.959963984540054, abs=1e-12)


def test_builtin_metrics_give_metrics_json_its_keys_in_order():
    acc, member_cell = two_cell_accumulator()
    cell = acc.summary(member_cell, "a")["cells"]["a"]
    assert list(cell) == ["members", "impressions", "visits", "clicks", "plays", "quality_plays", "minutes",
                          "successful_visits", "ctr", "play_rate", "take_fraction", "artwork_gain",
                          "minutes_per_member", "plays_per_visit", "quality_plays_per_visit",
                          "visit_success_rate", "minutes_per_visit", "time_to_first_play",
                          "expected_take_fraction", "oracle_take_fraction", "uniform_take_fraction",
                          "expected_regret", "regret_per_1k_impressions"]
    assert cell["ctr"]["estimate"] == pytest.approx(2 / 3)
    assert cell["minutes_per_member"]["estimate"] == pytest.approx(15.0)         # (30 + 0) / 2 members
    assert cell["regret_per_1k_impressions"] == pytest.approx(1000 * 0.1)
    b = acc.summary(member_cell, "a")["cells"]["b"]
    assert b["artwork_gain"]["estimate"] == pytest.approx(2.0)                     # 0.9 / 0.3 - 1
    row = acc.time_series()[0]
    assert [k for k in row if k.endswith("_se")] == ["ctr_se", "play_rate_se", "take_fraction_se",
                                                    "visit_success_rate_se"]


def test_a_metric_declared_once_is_in_the_summary_lift_and_time_series(scratch_registry):
    class VisitsWithQualityPlay(RatioMetric):
        name, label, unit = "visit_success_test", "visit success", "quality plays / visit"
        numerator, denominator, percent, binomial = "quality_plays", "visits", True, True

    acc, member_cell = two_cell_accumulator()
    summary = acc.summary(member_cell, "a")
    keys = list(summary["cells"]["a"])
    assert keys.index("minutes_per_member") < keys.index("visit_success_test") < keys.index("expected_take_fraction")
    a, b = summary["cells"]["a"]["visit_success_test"], summary["cells"]["b"]["visit_success_test"]
    assert a["estimate"] == pytest.approx(1 / 3) and b["estimate"] == pytest.approx(2 / 3)
    assert a["ci_high"] - a["estimate"] == pytest.approx(1.959963984540054 * a["se"])
    assert summary["lift"]["b"]["visit_success_test"]["estimate"] == pytest.approx(1.0)     # (2/3) / (1/3) - 1
    row = next(r for r in acc.time_series() if r["cell"] == "a")
    assert row["visit_success_test"] == pytest.approx(1 / 3)
    assert row["visit_success_test_se"] == pytest.approx(math.sqrt(1 / 3 * 2 / 3 / 3))


def test_metrics_are_selected_by_name_or_target_and_a_typo_is_refused():
    ctr, gain = build_metrics(["ctr", {"_target_": "sim.metrics.builtin.ArtworkGain"}])
    assert (ctr.name, gain.name) == ("ctr", "artwork_gain")
    with pytest.raises(ConfigError, match=r"metrics\[0\].name = 'take_fractoin'.*did you mean 'take_fraction'"):
        build_metrics(["take_fractoin"])


def test_readme_metric_example_runs_and_reaches_metrics_timeseries_and_report(tmp_path):
    source = readme_block("class VisitSuccess")
    (tmp_path / "my_metrics.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "my_metrics.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "outputs" / "my_metric"
    metrics = json.loads((run / "metrics.json").read_text())
    for cell in ("uniform", "thompson"):
        c = metrics["cells"][cell]
        assert c["visit_success"]["estimate"] == pytest.approx(c["quality_plays"] / c["visits"])
    assert "visit_success" in metrics["lift"]["thompson"]
    with open(run / "timeseries.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert "visit_success" in header and "visit_success_se" in header
    assert "<th>visit success</th>" in (run / "report.html").read_text()
