"""The README's custom-policy example works as printed: it passes the conformance checker and
runs in the simulator through ``_target_``."""
from __future__ import annotations

import sys

import numpy as np

from sim.config import experiment_config_from_dict
from sim.engine import Simulation
from sim.policies import build_policy
from sim.testing import check_policy
from tests.readme_examples import readme_block



def _example_source() -> str:
    return readme_block("class MostClickedImage")


def test_readme_policy_example_runs(tmp_path, monkeypatch, world):
    (tmp_path / "my_policies.py").write_text(_example_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_policies", None)
    policy = build_policy({"_target_": "my_policies.MostClickedImage", "prior_clicks": 2.0})
    policy.reset(world.catalog)
    check_policy(policy, world.catalog)

    cfg = experiment_config_from_dict({
        "seed": 0, "world": {"n_members": 300, "n_titles": 30, "n_genres": 6},
        "engine": {"days": 1, "retrain_hours": 3, "progress": False},
        "policy": {"_target_": "my_policies.MostClickedImage", "name": "most_clicked"}})
    sim = Simulation(cfg)
    summary = sim.run()
    cell = summary["cells"]["most_clicked"]
    assert cell["impressions"] > 0
    # It learned from clicks: several deploys and a non-empty model.
    assert sim.cells[0].policy.model_version_ >= 3
    assert np.sum(sim.cells[0].policy.counts_.shows) > 0
