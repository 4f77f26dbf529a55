"""Presets are never overridden silently: an experiment selects a named world preset, and a
user's ``world=...`` replaces it as a whole (and the run says so)."""
from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import yaml

from experiments import config_store  # noqa: F401 -- registers the schema
from experiments.presets import experiment_presets, preset_notes
from experiments.run import CONFIG_DIR, config_to_dict
from sim.runner import run_experiment

EXPERIMENTS = sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
TINY = yaml.safe_load(Path(CONFIG_DIR, "world", "tiny.yaml").read_text())
#: World keys that are an experiment's treatment, not its size: they apply to any world.
TREATMENTS = {"launch_share", "response"}


def compose(*overrides: str) -> dict:
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return config_to_dict(hydra.compose("config", overrides=list(overrides)))


def test_there_are_experiments_with_their_own_world_preset():
    own = {e: experiment_presets(e).get("world") for e in EXPERIMENTS}
    assert {e for e, w in own.items() if w} >= {"cold_start", "clickbait_trap", "clickbait_loop",
                                                 "feedback_loop", "incrementality"}
    for e, w in own.items():
        if w:
            assert Path(CONFIG_DIR, "world", f"{w}.yaml").is_file(), (e, w)


@pytest.fixture(scope="module")
def tiny_configs() -> dict[str, dict]:
    """Every experiment composed with ``world=tiny`` for a few simulated hours."""
    return {e: compose(f"experiment={e}", "world=tiny", "engine.days=0.1", "engine.progress=false",
                       "engine.log_impressions=false") for e in EXPERIMENTS}


def test_world_tiny_wins_over_every_experiment(tiny_configs):
    for experiment, cfg in tiny_configs.items():
        for key, value in TINY.items():
            assert cfg["world"][key] == value, (experiment, key, cfg["world"][key])
        # The experiment file itself restates no world size: only treatment keys.
        data = yaml.safe_load(Path(CONFIG_DIR, "experiment", f"{experiment}.yaml").read_text())
        assert set(data.get("world") or {}) <= TREATMENTS, (experiment, data.get("world"))


def test_keys_known_without_composing_are_in_every_experiments_config(tiny_configs):
    """``experiments.run`` accepts an override of these keys without composing the config first
    (:func:`experiments.config_store.always_present`): each must be in every composed config."""
    from experiments.config_store import keys_every_config_has

    def paths(tree: dict, prefix: tuple = ()):
        for key, value in tree.items():
            yield prefix + (key,)
            if isinstance(value, dict):
                yield from paths(value, prefix + (key,))

    known = list(paths(keys_every_config_has()))
    assert len(known) > 100 and ("engine", "faults", "duplicate") in known and ("policy", "name") in known
    for experiment, cfg in tiny_configs.items():
        for path in known:
            node = cfg
            for part in path:
                assert isinstance(node, dict) and part in node, (experiment, ".".join(path))
                node = node[part]


def test_no_config_sets_hydra_mode():
    """``experiments.run`` skips Hydra's composition that only reads ``hydra.mode``
    (:func:`experiments.run.mode_probe_skipped`): right only while no config file sets it."""
    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        data = yaml.safe_load(path.read_text()) or {}
        in_hydra_group = path.relative_to(CONFIG_DIR).parts[0] == "hydra"
        assert "mode" not in (data if in_hydra_group else data.get("hydra") or {}), path
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=["experiment=feedback_loop_arms"], return_hydra_config=True)
    assert cfg.hydra.mode is None


def test_the_mode_probe_is_skipped_only_when_nothing_could_set_the_mode():
    from hydra._internal.hydra import Hydra

    from experiments.run import mode_probe_skipped

    probe = Hydra.get_mode
    with mode_probe_skipped(["world=tiny", "-m", "seed=0,1"]):
        assert Hydra.get_mode(None, "config", []) is None
    assert Hydra.get_mode is probe
    for argv in (["hydra.mode=MULTIRUN"], ["--config-dir", "mine"], ["-cn", "other"]):
        with mode_probe_skipped(argv):
            assert Hydra.get_mode is probe, argv


def test_without_a_world_choice_the_experiment_preset_applies():
    for experiment, members, name in [("cold_start", 40_000, "default_40k"), ("feedback_loop", 12_000, "feedback_loop"),
                                      ("clickbait_loop", 40_000, "clickbait_loop")]:
        cfg = compose(f"experiment={experiment}")
        assert (cfg["world"]["n_members"], cfg["world"]["name"]) == (members, name)
    # ... and a single key still overrides the preset.
    assert compose("experiment=incrementality", "world.n_members=123")["world"]["n_members"] == 123


def test_treatment_keys_survive_world_tiny(tiny_configs):
    assert tiny_configs["clickbait_trap"]["world"]["response"]["clickbait_appeal"] == 1.5
    assert tiny_configs["clickbait_loop"]["world"]["response"]["clickbait_appeal"] == 1.5
    assert tiny_configs["cold_start"]["world"]["launch_share"] == 0.3
    assert tiny_configs["stickiness"]["world"]["response"]["artwork_change_penalty"] == 0.4


def test_the_replacement_is_named():
    notes = preset_notes({"experiment": "feedback_loop", "world": "tiny"}, ["experiment=feedback_loop", "world=tiny"])
    assert len(notes) == 1 and "world=tiny" in notes[0] and "'feedback_loop'" in notes[0]
    assert preset_notes({"experiment": "feedback_loop"}, ["experiment=feedback_loop", "world.n_members=5"]) == []
    assert preset_notes({"experiment": "baselines"}, ["world=tiny"]) == []      # no preset to replace
    assert preset_notes({"experiment": "feedback_loop"}, ["world=feedback_loop"]) == []


def test_every_experiment_runs_on_world_tiny(tmp_path, tiny_configs):
    """Each preset simulates at tiny size (a few simulated hours, no charts)."""
    for experiment, cfg in tiny_configs.items():
        summary = run_experiment(cfg, tmp_path / experiment)
        assert summary["config"]["world"]["n_members"] == TINY["n_members"], experiment
        assert summary["impressions"] > 0, experiment
