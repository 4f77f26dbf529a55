"""Configuration validation: every bad value is refused with a message that names the key, the
value and what is allowed -- from a plain dict, through Hydra composition, and before a run
writes anything. A property test mixes valid and invalid values and checks that each config
either runs or is refused with a :class:`ConfigError`, never anything else."""
from __future__ import annotations

import copy
import math
import re
import tempfile
from pathlib import Path

import hydra
import pytest
from hydra.errors import MissingConfigException
from hypothesis import event, given, settings
from hypothesis import strategies as st

from experiments.run import CONFIG_DIR, config_to_dict
from sim.config import ConfigError, experiment_config_from_dict
from sim.engine import Simulation
from sim.runner import run_experiment
from tests.conftest import tiny_world

#: Every option of the policy group: one per built-in policy (generated from the classes by
#: experiments.config_store) plus any YAML file under configs/policy.
POLICY_FILES = sorted({"uniform", "fixed", "oracle", "epsilon_greedy", "thompson", "ucb1", "softmax",
                       "explore", "sticky", "lints", "logistic_ts", "linucb", "linear_epsilon_greedy",
                       "linear_softmax"} | {p.stem for p in Path(CONFIG_DIR, "policy").glob("*.yaml")})
RANKER_NAMES = ("popularity", "learned", "oracle", "random")
#: Policies that are also fixed cells of configs/experiment/baselines.yaml.
BASELINE_CELL_NAMES = ("uniform", "fixed", "oracle")


def tiny_config() -> dict:
    """A valid two-cell config on a world that builds in milliseconds."""
    return {
        "seed": 0,
        "world": tiny_world(artworks_max=5),
        "engine": {"days": 0.25, "progress": False},
        "ranker": {"name": "popularity"},
        "policy": {"name": "thompson"},
        "experiment": {"name": "t", "control": "a", "cells": [
            {"name": "a", "share": 0.5, "policy": {"name": "uniform"}},
            {"name": "b", "share": 0.5, "policy": {"name": "thompson"}}]},
    }


def with_values(changes: dict) -> dict:
    """``tiny_config()`` with dotted keys (``experiment.cells[1].policy.epsilon``) set."""
    cfg = tiny_config()
    for path, value in changes.items():
        tokens = [int(i) if i else k for k, i in re.findall(r"(\w+)|\[(\d+)\]", path)]
        node = cfg
        for t in tokens[:-1]:
            node = node[t]
        node[tokens[-1]] = copy.deepcopy(value)
    return cfg


def validate(cfg: dict):
    """Everything that is checked before a simulation starts: the schema, then the policies."""
    return Simulation(experiment_config_from_dict(cfg))


def assert_names(err: ConfigError, key: str, value_text: str, allowed_text: str) -> None:
    msg = str(err)
    assert err.key == key, msg
    assert msg.startswith(key), msg
    assert value_text in msg, f"{value_text!r} not in {msg!r}"
    assert allowed_text in msg, f"{allowed_text!r} not in {msg!r}"


nan, inf = float("nan"), float("inf")
C1 = "experiment.cells[1]"
# (changes, key named in the error, the value as shown, what is allowed)
BAD_VALUES = [
    # wrong types
    ({"world.n_members": "300"}, "world.n_members", "'300'", "an integer in [1, "),
    ({"world.n_members": True}, "world.n_members", "True", "an integer"),
    ({"world.n_titles": 2.5}, "world.n_titles", "2.5", "an integer in [1, "),
    ({"engine.days": "1"}, "engine.days", "'1'", "a number in (0, 3650]"),
    ({"engine.progress": "yes"}, "engine.progress", "'yes'", "true or false"),
    ({"ranker.columns": True}, "ranker.columns", "True", "an integer in [1, 100]"),
    ({"seed": "abc"}, "seed", "'abc'", "an integer in [0, "),
    ({"world": [1, 2]}, "world", "[1, 2]", "a mapping"),
    ({"engine": ["days", 1]}, "engine", "['days', 1]", "a mapping"),
    ({"experiment": "baselines"}, "experiment", "'baselines'", "a mapping"),
    ({"world.countries": "US"}, "world.countries", "'US'", "a non-empty list of US, BR"),
    ({f"{C1}.policy": "thompson"}, f"{C1}.policy", "'thompson'", "a mapping"),
    # out-of-range numbers
    ({"world.n_members": -5}, "world.n_members", "-5", "an integer in [1, 50000000]"),
    ({"world.n_titles": 0}, "world.n_titles", "0", "an integer in [1, "),
    ({"world.n_members": nan}, "world.n_members", "nan", "an integer"),
    ({"world.visits_per_day": inf}, "world.visits_per_day", "inf", "a number in (0, 1000]"),
    ({"world.launch_share": 1.5}, "world.launch_share", "1.5", "a number in [0.0, 1.0]"),
    ({"world.launch_share": nan}, "world.launch_share", "nan", "a number in [0.0, 1.0]"),
    ({"world.hype_spread": -0.5}, "world.hype_spread", "-0.5", "a number in [0.0, 10.0]"),
    ({"world.response": {"scroll_continue": -0.1}}, "world.response.scroll_continue", "-0.1",
     "a number in [0.0, 1.0]"),
    ({"world.artworks_min": 5, "world.artworks_max": 3}, "world.artworks_max", "3",
     "world.artworks_min (5)"),
    ({"world.diurnal_peak_hour": 24}, "world.diurnal_peak_hour", "24", "a number in [0, 24)"),
    ({"engine.days": 0}, "engine.days", "0", "a number in (0, 3650]"),
    ({"engine.days": -1}, "engine.days", "-1", "a number in (0, 3650]"),
    ({"engine.log_chunk_rows": 0}, "engine.log_chunk_rows", "0", "an integer in [1, "),
    ({"ranker.rows": 0}, "ranker.rows", "0", "an integer in [1, 100]"),
    ({"seed": -1}, "seed", "-1", "an integer in [0, "),
    ({f"{C1}.share": 0}, f"{C1}.share", "0", "a number in (0, 1]"),
    # unknown names
    ({"world.n_membres": 300}, "world.n_membres", "300", "unknown key (did you mean 'n_members'?); known keys of world: "),
    ({"engine.dayz": 1}, "engine.dayz", "1", "unknown key (did you mean 'days'?); known keys of engine: "),
    ({"ranker.name": "best"}, "ranker.name", "'best'", "one of random, oracle, popularity, learned"),
    ({"engine.mode": "turbo"}, "engine.mode", "'turbo'", "one of batched, reference"),
    ({"world.countries": ["US", "XX"]}, "world.countries", "'XX'", "one of US, BR, GB"),
    ({"polcy": {"name": "thompson"}}, "polcy", "{'name': 'thompson'}",
     "unknown key (did you mean 'policy'?); known keys of the config: engine, experiment, policy, ranker, seed, world"),
    ({"experiment.arms": []}, "experiment.arms", "[]", "unknown key; known keys of experiment: analyses, cells, control, name, ranker_scope"),
    ({f"{C1}.weight": 2}, f"{C1}.weight", "2", "unknown key; known keys of a cell: name, policy, ranker, share"),
    ({f"{C1}.ranker": {"name": "best"}}, f"{C1}.ranker.name", "'best'", "one of random, oracle"),
    # contradictory settings
    ({"engine.window_minutes": 360, "engine.retrain_hours": 6}, "engine.window_minutes", "360",
     "less than engine.retrain_hours (360 minutes)"),
    ({"engine.window_minutes": 90, "engine.ranker_retrain_hours": 1}, "engine.window_minutes", "90",
     "less than engine.ranker_retrain_hours (60 minutes)"),
    ({"experiment.cells[0].share": 0.5, f"{C1}.share": 0.6}, "experiment.cells[*].share",
     "[0.5, 0.6]", "shares that sum to 1 (they sum to 1.1)"),
    ({f"{C1}.name": "a"}, f"{C1}.name", "'a'", "a name not used by another cell"),
    ({"experiment.control": "missing"}, "experiment.control", "'missing'", "one of a, b"),
    ({"experiment.cells": []}, "experiment.cells", "[]", "a non-empty list of cells"),
    ({"experiment.name": ""}, "experiment.name", "''", "a non-empty string"),
    # policy hyperparameters and names (refused when Simulation builds the policies); the
    # messages are generated from each policy's declared Params, like every other key's
    ({f"{C1}.policy": {"name": "epsilon_greedy", "epsilon": 1.5}}, f"{C1}.policy.epsilon", "1.5",
     "a number in [0.0, 1.0]"),
    ({f"{C1}.policy": {"name": "epsilon_greedy", "epsilon": nan}}, f"{C1}.policy.epsilon", "nan",
     "a number in [0.0, 1.0]"),
    ({f"{C1}.policy": {"name": "thompson", "n_draws": 0}}, f"{C1}.policy.n_draws", "0",
     "an integer >= 1"),
    ({f"{C1}.policy": {"name": "softmax", "temperature": 0}}, f"{C1}.policy.temperature", "0",
     "a number > 0.0"),
    ({f"{C1}.policy": {"name": "thompson", "reward": "views"}}, f"{C1}.policy.reward", "'views'",
     "one of click, play, quality_play"),
    ({f"{C1}.policy": {"name": "ucb1", "c": -1}}, f"{C1}.policy.c", "-1", "a number >= 0.0"),
    ({f"{C1}.policy": {"name": "thompson", "prior_beta": 0}}, f"{C1}.policy.prior_beta", "0",
     "a number > 0.0"),
    ({f"{C1}.policy": {"name": "thompson", "epsilon": 0.1}}, f"{C1}.policy.epsilon", "0.1",
     "unknown key; known keys of policy ThompsonPolicy: n_draws, prior_alpha, prior_beta, reward"),
    ({f"{C1}.policy": {"name": "thompson", "n_draw": 3}}, f"{C1}.policy.n_draw", "3",
     "unknown key (did you mean 'n_draws'?)"),
    ({f"{C1}.policy": {"name": "bandit9000"}}, f"{C1}.policy.name", "'bandit9000'",
     "one of uniform, fixed, oracle, explore, sticky, epsilon_greedy, thompson"),
    ({f"{C1}.policy": {"reward": "click"}}, f"{C1}.policy.name", "None", "one of uniform"),
    ({f"{C1}.policy": {"name": "explore", "base": "thompson"}}, f"{C1}.policy.base", "'thompson'",
     "a policy mapping"),
    ({f"{C1}.policy": {"name": "explore", "epsilon": 1.5, "base": {"name": "thompson"}}},
     f"{C1}.policy.epsilon", "1.5", "a number in [0.0, 1.0]"),
    ({f"{C1}.policy": {"name": "explore", "base": {"name": "epsilon_greedy", "epsilon": 2}}},
     f"{C1}.policy.base.epsilon", "2", "a number in [0.0, 1.0]"),
    ({f"{C1}.policy": {"_target_": "no_such_module.Policy"}}, f"{C1}.policy._target_",
     "'no_such_module.Policy'", "an importable class"),
    ({f"{C1}.policy": {"_target_": "builtins.dict"}}, f"{C1}.policy._target_", "'builtins.dict'",
     "a subclass of sim.policies.base.ArtworkPolicy"),
    ({f"{C1}.policy": {"_target_": 42}}, f"{C1}.policy._target_", "42", "a dotted import path"),
    # rankers and response models: each class's own declared parameters
    ({"ranker": {"name": "popularity", "l2": 2.0}}, "ranker.l2", "2.0",
     "unknown key; known keys of ranker: columns, exploration_share, half_life_days"),
    ({"ranker": {"name": "learned", "correction": "ipv"}}, "ranker.correction", "'ipv'",
     "one of none, ipw (did you mean 'ipw'?)"),
    ({"world.response": {"name": "sessions"}}, "world.response.name", "'sessions'", "one of independent"),
    ({"world.response": {"theme_weight": 25}}, "world.response.theme_weight", "25",
     "a number in [-20.0, 20.0]"),
    # a one-cell run of the top-level policy is cell 0
    ({"experiment": {}, "policy": {"name": "epsilon_greedy", "epsilon": 1.5}},
     "experiment.cells[0].policy.epsilon", "1.5", "a number in [0.0, 1.0]"),
]


def _case_id(changes: dict) -> str:
    return ",".join(f"{k}={v!r}" for k, v in changes.items())[:60]


def test_tiny_config_is_valid():
    sim = validate(tiny_config())
    assert [c.name for c in sim.cells] == ["a", "b"]


@pytest.mark.parametrize("changes, key, value_text, allowed_text", BAD_VALUES,
                         ids=[_case_id(c[0]) for c in BAD_VALUES])
def test_bad_value_is_refused_naming_key_value_and_allowed(changes, key, value_text, allowed_text):
    with pytest.raises(ConfigError) as info:
        validate(with_values(changes))
    assert_names(info.value, key, value_text, allowed_text)


@pytest.mark.parametrize("response", ["fast", [1]])
def test_non_mapping_response_is_refused(response):
    with pytest.raises(ConfigError) as info:
        validate(with_values({"world.response": response}))
    assert_names(info.value, "world.response", repr(response), "a mapping")


def test_abstract_policy_target_is_refused():
    with pytest.raises(ConfigError) as info:
        validate(with_values({f"{C1}.policy": {"_target_": "sim.policies.ArtworkPolicy"}}))
    assert info.value.key == f"{C1}.policy._target_"


# ---- Hydra composition ------------------------------------------------------------------------
def compose(overrides: list[str]) -> dict:
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=overrides)
    return config_to_dict(cfg)


HYDRA_BAD = [
    (["world.n_members=-5"], "world.n_members", "-5"),
    (["world.n_members=abc"], "world.n_members", "'abc'"),
    (["policy=epsilon_greedy", "policy.epsilon=2"], "experiment.cells[3].policy.epsilon", "2"),
    (["experiment=single", "policy=epsilon_greedy", "policy.epsilon=2"],
     "experiment.cells[0].policy.epsilon", "2"),
    (["experiment=single", "policy=thompson", "policy.n_draws=0"],
     "experiment.cells[0].policy.n_draws", "0"),
    (["engine.window_minutes=600"], "engine.window_minutes", "600"),
    (["engine.days=0"], "engine.days", "0"),
    (["ranker.name=best"], "ranker.name", "'best'"),
    (["+world.typo=3"], "world.typo", "3"),
    (["+polcy=3"], "polcy", "3"),
    (["seed=-1"], "seed", "-1"),
]


@pytest.mark.parametrize("overrides, key, value_text", HYDRA_BAD, ids=[" ".join(c[0]) for c in HYDRA_BAD])
def test_hydra_bad_override_is_refused(overrides, key, value_text):
    d = compose(["world=tiny"] + overrides)
    with pytest.raises(ConfigError) as info:
        validate(d)
    assert info.value.key == key
    assert str(info.value).startswith(key) and value_text in str(info.value)
    assert "is not allowed: " in str(info.value) and info.value.allowed


def test_hydra_missing_policy_file_names_the_group():
    with pytest.raises(MissingConfigException) as info:
        compose(["policy=nonexistent_policy"])
    msg = str(info.value)
    assert "policy/nonexistent_policy" in msg
    assert "Available options in 'policy'" in msg and "thompson" in msg


def test_hydra_default_and_tiny_compositions_validate():
    default = experiment_config_from_dict(compose([]))
    assert default.name == "baselines" and default.control == "uniform"
    assert [c.name for c in default.cells] == ["uniform", "fixed", "oracle", "thompson"]
    tiny = validate(compose(["world=tiny"]))
    assert tiny.config.world.name == "tiny" and tiny.config.world.n_members == 400


@pytest.mark.parametrize("policy", POLICY_FILES)
def test_hydra_every_policy_file_validates_as_single_cell(policy):
    sim = validate(compose(["world=tiny", "experiment=single", f"policy={policy}"]))
    assert [c.name for c in sim.cells] == [policy]
    assert sim.config.control == policy


@pytest.mark.parametrize("policy", POLICY_FILES)
def test_hydra_every_policy_file_with_default_experiment(policy):
    d = compose(["world=tiny", f"policy={policy}"])
    if policy in BASELINE_CELL_NAMES:
        # The policy under test would be a second cell with a baseline's name.
        with pytest.raises(ConfigError) as info:
            validate(d)
        assert_names(info.value, "experiment.cells[3].name", repr(policy), "not used by another cell")
        assert "uniform, fixed, oracle" in str(info.value)      # the names already taken
        assert "experiment=single" in str(info.value)           # and the way out
    else:
        sim = validate(d)
        assert [c.name for c in sim.cells] == ["uniform", "fixed", "oracle", policy]


@pytest.mark.parametrize("experiment", ["single", "baselines"])
def test_hydra_target_policy_composes(experiment):
    # With a _target_, ``name`` only names the cell.
    d = compose(["world=tiny", f"experiment={experiment}", "policy=uniform", "policy.name=my_uniform",
                 "+policy._target_=sim.policies.baselines.UniformPolicy"])
    assert validate(d).cells[-1].name == "my_uniform"


# ---- refusal writes nothing -----------------------------------------------------------------
@pytest.mark.parametrize("changes", [{"world.n_members": -5}, {"engine.window_minutes": 600},
                                     {f"{C1}.policy": {"name": "epsilon_greedy", "epsilon": 1.5}}],
                         ids=["schema", "contradiction", "policy"])
def test_run_experiment_refuses_before_writing(tmp_path, changes):
    with pytest.raises(ConfigError):
        run_experiment(with_values(changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []


def test_refused_rerun_leaves_a_finished_run_alone(tmp_path):
    out = tmp_path / "run"
    run_experiment(tiny_config(), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError):
        run_experiment(with_values({"world.n_members": -5}), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---- property: valid configs run, invalid ones are refused by name ---------------------------
GOOD_POLICIES = st.one_of(
    st.just({"name": "uniform"}), st.just({"name": "fixed"}), st.just({"name": "oracle"}),
    st.builds(lambda n: {"name": "thompson", "n_draws": n}, st.integers(1, 64)),
    st.builds(lambda e: {"name": "epsilon_greedy", "epsilon": e}, st.floats(0, 1)),
    st.builds(lambda t: {"name": "softmax", "temperature": t}, st.floats(1e-3, 1)),
    st.builds(lambda c: {"name": "ucb1", "c": c}, st.floats(0, 2)),
    st.builds(lambda e: {"name": "explore", "epsilon": e, "base": {"name": "thompson"}},
              st.floats(0, 1)),
)
# (policy, the parameter the error must name)
BAD_POLICIES = [({"name": "bogus"}, "name"), ({"name": "epsilon_greedy", "epsilon": 1.5}, "epsilon"),
                ({"name": "epsilon_greedy", "epsilon": -0.1}, "epsilon"),
                ({"name": "thompson", "n_draws": 0}, "n_draws"),
                ({"name": "softmax", "temperature": 0}, "temperature"),
                ({"name": "thompson", "reward": "views"}, "reward")]
GOOD_SHARES = [(1.0,), (0.5, 0.5), (0.25, 0.75), (0.3, 0.7)]
# (shares, the key the error must name)
BAD_SHARES = [((0.5, 0.6), "experiment.cells[*].share"), ((0.2, 0.2), "experiment.cells[*].share"),
              ((0.0, 1.0), "experiment.cells[0].share"), ((1.5, -0.5), "experiment.cells[0].share")]
#: key -> (valid values, invalid values)
FIELDS = {
    "world.n_members": (st.integers(1, 200), [0, -5, "100", True, 2.5, nan, None]),
    "world.n_titles": (st.integers(1, 30), [0, -1, "x", 10**9, inf]),
    "world.artworks_min": (st.integers(1, 3), [0, 65, "2"]),      # min 3 > max 2 sometimes
    "world.artworks_max": (st.integers(2, 6), [0, 65, [3]]),
    "engine.days": (st.floats(0.01, 0.25), [0, -1, nan, "0.1", True]),
    "engine.window_minutes": (st.floats(1.0, 40.0), [0, -5, inf, "5"]),
    "engine.retrain_hours": (st.floats(0.5, 12.0), [0, -1, nan]),  # window >= retrain sometimes
    "ranker.name": (st.sampled_from(RANKER_NAMES), ["best", 3, None]),
    "policy": (GOOD_POLICIES, BAD_POLICIES),
    "shares": (st.sampled_from(GOOD_SHARES), BAD_SHARES),
}


@st.composite
def mixed_configs(draw):
    """(config dict, set of keys an error may name; empty if the config is valid)."""
    n_bad = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2]))
    bad_fields = set(draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=n_bad, max_size=n_bad,
                                   unique=True)))
    v, bad = {}, set()
    for f, (good, invalid) in FIELDS.items():
        v[f] = draw(st.sampled_from(invalid)) if f in bad_fields else draw(good)
    shares, share_key = (v["shares"], None) if "shares" not in bad_fields else v["shares"]
    policy, policy_param = (v["policy"], None) if "policy" not in bad_fields else v["policy"]
    for f in bad_fields - {"shares", "policy"}:
        bad.add(f)
    if share_key:
        bad.add(share_key)
    if policy_param:
        bad.add(f"experiment.cells[{len(shares) - 1}].policy.{policy_param}")
    # Cross-field rules, checked only when both sides are individually valid.
    if not {"world.artworks_min", "world.artworks_max"} & bad_fields \
            and v["world.artworks_max"] < v["world.artworks_min"]:
        bad.add("world.artworks_max")
    if not {"engine.window_minutes", "engine.retrain_hours"} & bad_fields \
            and v["engine.window_minutes"] >= min(v["engine.retrain_hours"] * 60, 24 * 60):
        bad.add("engine.window_minutes")
    cfg = {
        "seed": draw(st.integers(0, 3)),
        "world": {"name": "prop", "n_members": v["world.n_members"], "n_titles": v["world.n_titles"],
                  "n_genres": 4, "artworks_min": v["world.artworks_min"],
                  "artworks_max": v["world.artworks_max"], "history_length": 8},
        "engine": {"days": v["engine.days"], "window_minutes": v["engine.window_minutes"],
                   "retrain_hours": v["engine.retrain_hours"], "deploy_delay_minutes": 5,
                   "snapshot_hours": 1, "log_chunk_rows": 1000, "progress": False},
        "ranker": {"name": v["ranker.name"]},
        "policy": policy,
    }
    if len(shares) > 1:  # extra cells are uniform; the policy under test is the last cell
        cells = [{"name": f"cell{i}", "share": s, "policy": {"name": "uniform"}}
                 for i, s in enumerate(shares)]
        cells[-1]["policy"] = policy
        cfg["experiment"] = {"name": "prop", "cells": cells}
    else:  # one cell: the plain `policy=...` run
        cfg["experiment"] = {"name": "prop"}
    return cfg, bad


def policy_name(cfg: dict) -> str:
    cells = cfg.get("experiment", {}).get("cells")
    return (cells[-1]["policy"] if cells else cfg["policy"])["name"]


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(mixed_configs())
def test_config_either_runs_or_is_refused_by_name(case):
    cfg, bad = case
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        try:
            result = run_experiment(cfg, out)
        except ConfigError as err:
            event(f"refused: {err.key}")
            assert bad, f"valid config refused: {err}"
            assert err.key in bad, f"{err} (expected one of {sorted(bad)})"
            assert str(err).startswith(err.key)
            assert not out.exists()
            return
        event(f"valid: ran {len(result['cells'])} cell(s), last policy {policy_name(cfg)}")
        assert not bad, f"config with bad {sorted(bad)} was accepted"
        assert result["complete"] is True and (out / "metrics.json").is_file()
        assert math.isfinite(result["impressions"])


# ---- one schema: Hydra sees every declared key -------------------------------------------------
import dataclasses  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from experiments.run import unknown_override  # noqa: E402
from sim.config import (RANKERS, RESPONSE_MODELS, EngineConfig, ExperimentSection,  # noqa: E402
                        WorldConfig)
from sim.homepage import RandomRanker, Ranker  # noqa: E402
from sim.policies import POLICIES, ArtworkPolicy, build_policy  # noqa: E402
from sim.policies.baselines import UniformPolicy  # noqa: E402
from sim.schema import field_default, hyperparameters, param  # noqa: E402
from sim.world import ResponseModel  # noqa: E402

REPO = Path(CONFIG_DIR).parent


def declared(cls: type) -> dict:
    """{field: default} of the fields a dataclass declares with sim.schema.param."""
    out = {}
    for f in dataclasses.fields(cls):
        if "doc" in f.metadata:
            d = field_default(f)
            out[f.name] = list(d) if isinstance(d, tuple) else d
    return out


def test_keys_the_readme_types_override_without_plus():
    d = compose(["world=tiny", "world.hype_spread=0", "engine.days=0.2", "world.visits_per_day=1.5",
                 "ranker.columns=6", "ranker.exploration_share=0.1", "policy=epsilon_greedy",
                 "policy.epsilon=0.3", "world.response.theme_weight=2.5"])
    cfg = experiment_config_from_dict(d)
    assert cfg.world.hype_spread == 0 and cfg.world.visits_per_day == 1.5 and cfg.engine.days == 0.2
    assert cfg.ranker.columns == 6 and cfg.ranker.exploration_share == 0.1
    assert cfg.world.response.theme_weight == 2.5
    assert cfg.cells[-1].policy["epsilon"] == 0.3


def test_every_response_key_overrides_without_plus():
    fields = declared(hyperparameters(RESPONSE_MODELS["independent"]))
    assert len(fields) >= 19
    # Half the default, or 0.1 for a zero default: inside every declared range.
    values = {k: (v / 2 if v else 0.1) for k, v in fields.items()}
    d = compose(["world=tiny"] + [f"world.response.{k}={v}" for k, v in values.items()])
    response = experiment_config_from_dict(d).world.response
    for k, v in values.items():
        assert getattr(response, k) == pytest.approx(v), k


def test_every_key_is_in_the_composed_config_with_its_default():
    d = compose(["policy=linucb", "ranker=popularity"])
    # A few defaults written out (not read from the schema under test).
    assert d["world"]["visits_per_day"] == 0.6 and d["world"]["hype_spread"] == 1.0
    assert d["world"]["response"]["theme_weight"] == 3.0 and d["world"]["response"]["name"] == "session"
    assert d["engine"]["window_minutes"] == 5.0 and d["policy"]["alpha"] == 0.05
    assert d["ranker"]["half_life_days"] == 7.0 and d["ranker"]["rows"] == 10
    # Every declared key, at its default unless a YAML file of the composition changes it.
    changed = {("world", "n_titles"), ("experiment", "name"), ("experiment", "control"),
               ("experiment", "cells")}
    for section, cls in (("world", WorldConfig), ("engine", EngineConfig), ("experiment", ExperimentSection),
                         ("policy", POLICIES["linucb"]), ("ranker", RANKERS["popularity"])):
        schema = cls if dataclasses.is_dataclass(cls) and section in ("world", "engine", "experiment") \
            else hyperparameters(cls)
        for k, v in declared(schema).items():
            assert k in d[section], f"{section}.{k} missing"
            if (section, k) not in changed:
                assert d[section][k] == v, f"{section}.{k}: {d[section][k]!r} != {v!r}"
    for k, v in declared(hyperparameters(RESPONSE_MODELS["independent"])).items():
        assert d["world"]["response"][k] == v


@pytest.mark.parametrize("group, registry", [("policy", POLICIES), ("ranker", RANKERS),
                                             ("world/response", RESPONSE_MODELS)])
def test_every_registered_class_is_a_group_option_with_all_its_keys(group, registry):
    for name, cls in registry.classes.items():
        d = compose(["world=tiny", f"{group}={name}"])
        node = d
        for part in group.split("/"):
            node = node[part]
        assert node["name"] == name
        assert set(declared(hyperparameters(cls))) <= set(node), (group, name)


def test_cfg_job_and_saved_config_show_every_key(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "experiments.run", "world=tiny", "--cfg", "job"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job = yaml.safe_load(out.stdout)
    assert job["world"]["hype_spread"] == 1.0 and job["world"]["response"]["scroll_continue"] == 0.8
    assert job["policy"]["n_draws"] == 256 and job["ranker"]["l2"] == 1.0
    d = compose(["world=tiny", "engine.days=0.05", "engine.progress=false"])
    run_experiment(d, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["world"]["response"]["theme_weight"] == 3.0 and saved["world"]["visits_per_day"] == 0.6


def test_ucb1_keeps_the_width_its_config_file_gave():
    # configs/policy/ucb1.yaml said c: 0.1 (and was what policy=ucb1 ran); the class now declares it.
    assert compose(["policy=ucb1"])["policy"]["c"] == 0.1
    assert build_policy({"name": "ucb1"}).c == 0.1


# ---- misspelt keys -----------------------------------------------------------------------------
@pytest.mark.parametrize("override, closest", [
    ("world.hype_sprad=0", "world.hype_spread"), ("world.response.theme_weigth=1", "world.response.theme_weight"),
    ("engine.dayz=1", "engine.days"), ("ranker.colums=4", "ranker.columns"), ("sed=3", "seed"),
    ("world.respons.theme_weight=1", "world.response.theme_weight"),
])
def test_misspelt_override_names_the_closest_key(override, closest):
    message = unknown_override(["world=tiny", override])
    key = override.split("=")[0]
    assert message.startswith(f"config error: {key} = ") and "\n" not in message
    assert f"did you mean '{closest}'?" in message


def test_known_overrides_pass_the_check():
    assert unknown_override(["world=tiny", "world.hype_spread=0", "policy=ucb1", "policy.c=0.2",
                             "+world.extra=1", "hydra.run.dir=x", "-m", "seed=1,2"]) is None
    # A key only the selected option has: known after that choice, unknown without it.
    assert unknown_override(["ranker=popularity", "ranker.half_life_days=2"]) is None
    assert "ranker.half_life_days" in unknown_override(["ranker.half_life_days=2"])


def test_misspelt_override_exits_nonzero_and_leaves_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "experiments.run", "world=tiny", "world.hype_sprad=0",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'world.hype_spread'?" in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []


# ---- YAML files hold only differences ----------------------------------------------------------
def _option_class(registry, spec: dict, defaults_list: list | None, group_dir: Path):
    """The class a YAML option selects: its _target_, its name, or the option it extends."""
    if "_target_" in spec:
        return None   # a user class: its module may not be importable here
    name = spec.get("name")
    for entry in defaults_list or []:
        if isinstance(entry, str) and entry != "_self_":
            base = group_dir / f"{entry}.yaml"
            name = name or (yaml.safe_load(base.read_text()).get("name") if base.is_file() else entry)
    return registry[name] if name in registry else None


def yaml_problems(data: dict, schema: dict, where: str) -> list[str]:
    """Keys of ``data`` that restate their default or that ``schema`` lacks."""
    problems = []
    for k, v in data.items():
        if k not in schema:
            problems.append(f"{where}.{k}: not a key of the schema")
        elif not (isinstance(v, str) and "${" in v) and v == schema[k]:
            problems.append(f"{where}.{k}: restates the default {v!r}")
    return problems


def spec_problems(registry, spec: dict, where: str, cls=None) -> list[str]:
    cls = cls or (registry[spec["name"]] if spec.get("name") in registry else None)
    if cls is None:
        return [] if "_target_" in spec else [f"{where}.name: {spec.get('name')!r} is not registered"]
    params = {k: v for k, v in spec.items() if k not in ("name", "_target_", "defaults")}
    return yaml_problems(params, declared(hyperparameters(cls)), where)


def world_problems(world: dict, where: str) -> list[str]:
    world = dict(world)
    response = world.pop("response", None) or {}
    out = yaml_problems(world, declared(WorldConfig), where)
    return out + spec_problems(RESPONSE_MODELS, {"name": "independent", **response}, f"{where}.response")


def config_file_problems(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text()) or {}
    group, where = path.parent.name, str(path.relative_to(CONFIG_DIR))
    defaults_list = data.pop("defaults", None)
    if group == "world":
        return world_problems(data, where)
    if group == "engine":
        return yaml_problems(data, declared(EngineConfig), where)
    if group in ("policy", "ranker"):
        registry = POLICIES if group == "policy" else RANKERS
        cls = _option_class(registry, data, defaults_list, path.parent)
        return spec_problems(registry, data, where, cls)
    assert group == "experiment", path
    # A `hydra:` node (e.g. the sweeper's params) is Hydra's own config: Hydra checks its keys.
    out = yaml_problems({k: None for k in data if k not in ("world", "engine", "experiment", "hydra")}, {}, where)
    out += world_problems(data.get("world") or {}, f"{where}:world")
    out += yaml_problems(data.get("engine") or {}, declared(EngineConfig), f"{where}:engine")
    exp = dict(data.get("experiment") or {})
    cells = exp.pop("cells", None) or []
    out += yaml_problems(exp, declared(ExperimentSection), f"{where}:experiment")
    for i, cell in enumerate(cells):
        for part, registry in (("policy", POLICIES), ("ranker", RANKERS)):
            if isinstance(cell.get(part), dict):
                out += spec_problems(registry, cell[part], f"{where}:experiment.cells[{i}].{part}")
    return out


CONFIG_FILES = sorted(p for group in ("world", "engine", "policy", "ranker", "experiment")
                      for p in Path(CONFIG_DIR, group).glob("*.yaml"))


def test_config_files_hold_only_differences_from_the_schema():
    assert len(CONFIG_FILES) >= 15
    problems = [p for path in CONFIG_FILES for p in config_file_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_differences_check_can_fail(tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "experiment").mkdir()
    (tmp_path / "world" / "bad.yaml").write_text("n_members: 20000\nhype_sprad: 0\nresponse: {theme_weight: 3.0}\n")
    (tmp_path / "experiment" / "bad.yaml").write_text(
        "engine: {days: 14}\nexperiment:\n  ranker_scope: shared\n  cells:\n"
        "    - {name: a, policy: {name: thompson, reward: quality_play}, ranker: {name: learned, l2: 1.0}}\n")
    me = sys.modules[__name__]
    old = me.CONFIG_DIR
    me.CONFIG_DIR = str(tmp_path)
    try:
        world = config_file_problems(tmp_path / "world" / "bad.yaml")
        exp = config_file_problems(tmp_path / "experiment" / "bad.yaml")
    finally:
        me.CONFIG_DIR = old
    assert len(world) == 3 and any("hype_sprad: not a key" in p for p in world)
    assert any("response.theme_weight: restates" in p for p in world)
    assert len(exp) == 4 and any("policy.reward: restates" in p for p in exp)


# ---- extension points: a class of your own, selected by _target_ ------------------------------
class HalfUniformPolicy(UniformPolicy):
    """A user policy with a declared hyperparameter: puts ``weight`` on the first candidate."""

    @dataclasses.dataclass(frozen=True)
    class Params(ArtworkPolicy.Params):
        weight: float = param(0.5, ge=0.0, le=1.0, doc="probability of the first candidate")

    def probabilities(self, batch):
        uniform = super().probabilities(batch)
        first = np.zeros_like(uniform)
        first[:, 0] = 1.0
        return self.weight * first + (1 - self.weight) * uniform


class ShuffledRanker(RandomRanker):
    """A user ranker with its own declared parameter (and the page keys every ranker has)."""

    @dataclasses.dataclass(frozen=True)
    class Params(Ranker.Params):
        spread: float = param(1.0, gt=0.0, le=10.0, doc="scale of the random scores")

    def scores(self, member, rng):
        return self.cfg.spread * super().scores(member, rng)


class DimmedResponse(ResponseModel):
    """A user response model: the independent model with every click probability scaled."""

    @dataclasses.dataclass(frozen=True)
    class Params(ResponseModel.Params):
        click_scale: float = param(1.0, gt=0.0, le=1.0, doc="multiplies P(click)")


HERE = __name__


def test_user_policy_with_declared_params_by_target():
    policy = build_policy({"_target_": f"{HERE}.HalfUniformPolicy", "weight": 0.3, "reward": "click"})
    assert type(policy) is HalfUniformPolicy and policy.weight == 0.3 and policy.reward == "click"
    assert HalfUniformPolicy().weight == 0.5             # from Python, the declared default
    with pytest.raises(ConfigError) as info:
        build_policy({"_target_": f"{HERE}.HalfUniformPolicy", "weight": 2})
    assert_names(info.value, "policy.weight", "2", "a number in [0.0, 1.0]")
    with pytest.raises(ConfigError) as info:
        build_policy({"_target_": f"{HERE}.HalfUniformPolicy", "wieght": 0.2})
    assert_names(info.value, "policy.wieght", "0.2", "did you mean 'weight'?")


def test_policy_from_python_validates_like_the_config():
    from sim.policies.bandits import ThompsonPolicy
    assert ThompsonPolicy(reward="click").reward == "click"
    with pytest.raises(ValueError, match="reward = 'views' is not allowed: one of click, play, quality_play"):
        ThompsonPolicy(reward="views")


def test_user_ranker_and_response_model_by_target_run(tmp_path):
    cfg = with_values({"ranker": {"_target_": f"{HERE}.ShuffledRanker", "spread": 2.0, "columns": 4},
                       "world.response": {"_target_": f"{HERE}.DimmedResponse", "click_scale": 0.5}})
    parsed = experiment_config_from_dict(cfg)
    assert parsed.ranker.cls is ShuffledRanker and parsed.ranker.spread == 2.0 and parsed.ranker.columns == 4
    assert parsed.world.response.cls is DimmedResponse and parsed.world.response.click_scale == 0.5
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["complete"] is True
    saved = summary["config"]
    assert saved["ranker"]["_target_"] == f"{HERE}.ShuffledRanker"
    for changes, key, value, allowed in [
            ({"ranker": {"_target_": f"{HERE}.ShuffledRanker", "spread": 0}}, "ranker.spread", "0", "a number in (0.0, 10.0]"),
            ({"ranker": {"_target_": f"{HERE}.ShuffledRanker", "sprad": 1}}, "ranker.sprad", "1", "did you mean 'spread'?"),
            ({"world.response": {"_target_": f"{HERE}.DimmedResponse", "click_scale": 3}},
             "world.response.click_scale", "3", "a number in (0.0, 1.0]"),
            ({"ranker": {"_target_": f"{HERE}.DimmedResponse"}}, "ranker._target_", f"'{HERE}.DimmedResponse'",
             "a subclass of sim.homepage.Ranker")]:
        with pytest.raises(ConfigError) as info:
            experiment_config_from_dict(with_values(changes))
        assert_names(info.value, key, value, allowed)


def test_response_model_is_a_group_and_a_name():
    d = compose(["world=tiny", "world/response=independent", "world.response.clickbait_appeal=1.5"])
    assert experiment_config_from_dict(d).world.response.clickbait_appeal == 1.5
    with pytest.raises(ConfigError) as info:
        experiment_config_from_dict(with_values({"world.response": {"name": "indepndent"}}))
    assert_names(info.value, "world.response.name", "'indepndent'", "did you mean 'independent'?")


def test_partial_dicts_take_the_declared_defaults():
    cfg = experiment_config_from_dict({"world": {"n_members": 50}})
    assert cfg.world.n_members == 50 and cfg.world.n_titles == 1000 and cfg.engine.days == 14.0
    assert cfg.ranker.name == "learned" and cfg.world.response.name == "independent"
    assert [c.name for c in cfg.cells] == ["thompson"] and cfg.seed == 0
