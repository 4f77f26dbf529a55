"""The benchmark's helpers, and its sections at tiny sizes (its figures come from
``python -m experiments.bench``, not tests)."""
from __future__ import annotations

import pytest

from experiments.bench import amdahl_speedup, parse_scales, per_day_costs, per_day_rss, serial_fraction, worst_growth


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


def test_per_day_rss_takes_each_days_largest_reading_and_keeps_a_partial_last_day():
    # (simulated minute, impressions, wall seconds, RSS MB); the step ending at minute 1440
    # belongs to the first day.
    marks = [(60.0, 1, 0.1, 100.0), (1440.0, 2, 0.2, 120.0), (1500.0, 3, 0.3, 110.0),
             (2880.0, 4, 0.4, 130.0), (3000.0, 5, 0.5, 90.0)]
    assert per_day_rss(marks) == [120.0, 130.0, 90.0]


def test_serial_fraction_inverts_amdahls_law():
    # Speed-up 1.6 on 2 workers: 1 / (s + (1 - s) / 2) = 1.6 gives s = 0.25.
    assert serial_fraction(1.6, 2) == pytest.approx(0.25)
    assert amdahl_speedup(0.25, 2) == pytest.approx(1.6)
    assert amdahl_speedup(0.25, 8) == pytest.approx(1 / (0.25 + 0.75 / 8))
    assert serial_fraction(2.0, 2) == pytest.approx(0.0) and amdahl_speedup(0.0, 32) == pytest.approx(32)
    assert serial_fraction(1.0, 4) == pytest.approx(1.0)      # no gain: all serial


@pytest.mark.slow
def test_bench_large_run_and_worker_speedup_at_a_tiny_size(tmp_path, capsys):
    """The bench's --large run and its worker-process section, end to end at a tiny size (the
    figures themselves come from `make figures`, on a quiet machine)."""
    import json

    from experiments.bench import main

    out = tmp_path / "bench.json"
    main(["--skip-headline", "--skip-scaling", "--skip-response", "--repeat", "1", "--titles", "100",
          "--large", "1000:2", "--large-workers", "2", "--workers", "2", "--parallel-members", "1000", "--parallel-days", "0.1",
          "--json", str(out)])
    report = json.loads(out.read_text())
    large = report["large"]
    assert large["members"] == 1000 and large["days"] == 2 and large["impressions"] > 0
    assert len(large["rss_mb_by_day"]) == 2 and len(large["us_per_impression_by_day"]) == 2
    assert 0 < large["peak_rss_mb_build"] <= large["peak_rss_mb"]
    assert len(large["worker_peak_rss_mb"]) == 2 and min(large["worker_peak_rss_mb"]) > 0
    assert [len(days) for days in large["worker_rss_mb_by_day"]] == [2, 2]
    local, procs = report["parallel"]
    assert (local["backend"], local["shards"], procs["backend"], procs["shards"]) == ("local", 1, "processes", 2)
    assert local["impressions"] == procs["impressions"] > 0        # the same run, split over 2 workers
    # End to end: building plus running, in both (one process draws its members while building)
    for r in (local, procs):
        assert r["total_s"] == pytest.approx(r["build_s"] + r["run_s"]) and r["build_s"] > 0
    assert procs["speedup"] == pytest.approx(local["total_s"] / procs["total_s"])
    assert amdahl_speedup(procs["serial_fraction"], 2) == pytest.approx(procs["speedup"])
    assert set(procs["predicted_speedup"]) == {"8", "32", "128"}
    assert local["peak_rss_mb"] > 0 and len(procs["peak_rss_mb"]) == 2 and min(procs["peak_rss_mb"]) > 0
    printed = capsys.readouterr().out
    assert "large run: 1,000 members × 2 d" in printed and "serial fraction (Amdahl" in printed
    assert "peak RSS per worker:" in printed and "worker 1: peak RSS" in printed


@pytest.mark.slow
def test_fixed_costs_time_the_redeploys_and_log_writes_of_the_run():
    """The headline's split of a run: redeploys (the policy's ``update``), Parquet part writes,
    and the rest. A policy that never learns has no redeploy time; one that does has some."""
    from experiments.bench import fixed_costs, run_closed_loop

    learning = run_closed_loop(300, 60, 1.0, "thompson", log_chunk_rows=2_000)
    frozen = run_closed_loop(300, 60, 1.0, "uniform", log_chunk_rows=2_000)
    assert learning["deploys"] > 0 and learning["deploy_s"] > 0
    assert frozen["deploys"] == 0 and frozen["deploy_s"] == 0.0
    for run in (learning, frozen):
        assert run["impressions"] > 2_000 and run["log_write_s"] > 0     # parts of 2,000 rows and the last
        assert run["deploy_s"] + run["log_write_s"] < run["run_s"]
    split = fixed_costs(learning, 1_000_000, compiled=2_000_000)
    per = 1e6 / learning["impressions"]
    assert split["deploy_us"] + split["log_write_us"] + split["serving_us"] == pytest.approx(learning["run_s"] * per)
    assert split["target_us"] == 1.0 and split["minimal_compiled_us"] == 0.5
    assert split["serving_budget_us"] == pytest.approx(1.0 - split["deploy_us"] - split["log_write_us"])
    assert fixed_costs(learning, None, 2_000_000)["serving_budget_us"] is None
