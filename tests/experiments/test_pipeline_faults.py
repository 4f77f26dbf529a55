"""experiment=pipeline_faults at a tiny size: the grid runs, the analysis measures every run,
and a repair that removes its fault's bias gives the fault-free numbers."""
from __future__ import annotations

import pandas as pd

from experiments.analyses.pipeline_faults import analyze, base_config, fault_of, grid_runs, run_grid
from tests.conftest import tiny_world


def test_grid_lists_each_fault_with_and_without_its_repair():
    names = [name for name, _ in grid_runs(("duplicate", "event_loss"), (0.05,), (0, 1))]
    assert names == ["none-0-off-s0", "none-0-off-s1", "duplicate-0.05-off-s0", "duplicate-0.05-off-s1",
                     "duplicate-0.05-on-s0", "duplicate-0.05-on-s1",
                     "event_loss-0.05-off-s0", "event_loss-0.05-off-s1"]    # event loss has no repair
    assert base_config()["world"]["response"] == {"name": "independent"}


def test_grid_runs_misattribution_to_the_previous_image_as_its_own_row():
    runs = dict(grid_runs(("misattribution_previous_image",), (0.05,), (0,)))
    assert list(runs) == ["none-0-off-s0", "misattribution_previous_image-0.05-off-s0",
                          "misattribution_previous_image-0.05-on-s0"]
    on = runs["misattribution_previous_image-0.05-on-s0"]["faults"]
    assert on == {"misattribution": 0.05, "misattribution_to": "previous_image", "join_by_id": True}
    assert fault_of({"faults": {"config": on}}) == ("misattribution_previous_image", 0.05, True)
    tile = {"misattribution": 0.05, "misattribution_to": "tile"}
    assert fault_of({"faults": {"config": tile}}) == ("misattribution", 0.05, False)


def test_tiny_grid_measures_bias_and_dedup_removes_it(tmp_path):
    run_grid(tmp_path, faults=("duplicate",), rates=(0.2,), seeds=(0,), days=0.25,
             world=tiny_world(n_members=150, n_titles=20))
    paths = analyze(tmp_path)
    assert {p.name for p in paths} == {"pipeline_faults.csv", "pipeline_faults_table.md",
                                       "pipeline_faults_summary.csv", "pipeline_faults.png"}
    rows = pd.read_csv(tmp_path / "pipeline_faults.csv").set_index("run")
    clean, faulty, fixed = (rows.loc[f"{n}-s0"] for n in ("none-0-off", "duplicate-0.2-off", "duplicate-0.2-on"))
    # Duplicated events fan the join out: more log rows (the unit tests in tests/engine/
    # test_faults.py check the size of the bias; this tiny run only checks the plumbing).
    assert faulty["log_rows"] > clean["log_rows"] and faulty["refused_rows"] == 0
    assert (faulty["ipw"], faulty["artwork_gain"]) != (clean["ipw"], clean["artwork_gain"])
    # De-duplication by impression id restores exactly what the fault-free pipeline reports.
    for k in ("log_rows", "measured_lift", "ipw", "dr", "artwork_gain"):
        assert fixed[k] == clean[k], k
    table = (tmp_path / "pipeline_faults_table.md").read_text()
    assert "| duplicate | 0.2 | on: dedup |" in table and "| duplicate | 0.2 | off |" in table
