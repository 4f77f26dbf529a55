"""Reliability battery, part 1 (issue 16): bad config values, names used in paths, index types,
memory estimates, messages and import targets -- all in-process.

Every case asserts a one-line refusal naming the key and the value that was passed (the bad values
are generated from the declared ranges in the schema; the expected text is the key and the value
this test passed, never computed by the code under test), and that nothing was written: the run
directory is not created, and a directory holding the user's files is byte-for-byte unchanged.
Parts 2 and 3: test_reliability_files.py (run directories, logs, command lines) and
test_reliability_procs.py (locks, kills, orphaned processes)."""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
import typing

import numpy as np
import pytest

from sim.config import POLICIES, EngineConfig, ExperimentSection, WorldConfig
from sim.runner import run_experiment
from sim.schema import ConfigError, hyperparameters
from tests.cli.reliability_support import assert_one_line, base_config, snapshot

SECTIONS = {"world": WorldConfig, "engine": EngineConfig, "experiment": ExperimentSection}
#: Keys whose refusal is tested elsewhere or that take any value.
SKIP = {("experiment", "cells"), ("experiment", "control"), ("world", "response"),
        ("engine", "ray_address"), ("engine", "memory_limit_gb")}


def _bad_values(f: dataclasses.Field, hint) -> list:
    """Values outside a field's declaration, from its metadata (range, choices, type)."""
    m = f.metadata
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    lo, hi = m.get("lo"), m.get("hi")
    if hint is bool:
        return ["yes", 2]
    if hint is int:
        out = ["many", 1.5, [3]]
        if lo is not None:
            out.append(int(lo) - 1)
        if hi is not None:
            out.append(int(hi) + 1)
        return out
    if hint is float:
        out = ["fast", float("nan")]
        if lo is not None:
            out.append(lo - 1.0)
        if hi is not None and not m.get("allow_inf"):
            out.append(hi * 2 + 1)
        if not m.get("allow_inf"):
            out.append(float("inf"))
        return out
    if hint is str:
        return ["no-such-choice"] if m.get("choices") else [7]
    if origin in (tuple, list):
        return ["US", ["XX"]] if m.get("choices") else [5]
    return []


def _cases() -> list:
    cases = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "doc" not in f.metadata or (section, f.name) in SKIP:
                continue
            for v in _bad_values(f, hints[f.name]):
                cases.append(pytest.param(f"{section}.{f.name}", v, id=f"{section}.{f.name}={v!r}"))
    return cases


CASES = _cases()


def _shown(value) -> str:
    """How a value must appear in the message: as the user would recognise it."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return repr(value[0])      # a list is refused at its first bad item
    return str(value)


def _set(cfg: dict, key: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    section, name = key.split(".")
    cfg[section][name] = value
    return cfg


@pytest.mark.parametrize("key,value", CASES)
def test_config_value_refused_in_one_line_before_anything_is_written(key, value, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(_set(base_config(), key, value), out)
    assert_one_line(err.value, key, _shown(value).rstrip("0").rstrip(".") if isinstance(value, float)
                    and math.isfinite(value) else _shown(value))
    assert not out.exists()


def test_config_cases_cover_every_declared_key():
    keys = {c.values[0] for c in CASES}
    assert len(CASES) >= 120 and {"world.n_genres", "engine.shards", "world.n_members"} <= keys


# ---- policy hyperparameters -----------------------------------------------------------------------
def _policy_cases() -> list:
    cases = []
    for name, cls in POLICIES.classes.items():
        params = hyperparameters(cls)
        hints = typing.get_type_hints(params)
        for f in dataclasses.fields(params):
            if "doc" not in f.metadata or f.name == "base":
                continue
            for v in _bad_values(f, hints[f.name])[:3]:
                cases.append(pytest.param(name, f.name, v, id=f"{name}.{f.name}={v!r}"))
    return cases


@pytest.mark.parametrize("policy,param,value", _policy_cases())
def test_policy_value_refused_in_one_line(policy, param, value, tmp_path):
    cfg = base_config()
    cfg["experiment"]["cells"][0]["policy"] = {"name": policy, param: value}
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, out)
    assert_one_line(err.value, param, "policy")
    assert not out.exists()


# ---- cross-field rules ----------------------------------------------------------------------------
CROSS = [
    ({"world": {"artworks_min": 5, "artworks_max": 3}}, "world.artworks_max", "3"),
    ({"engine": {"window_minutes": 60.0, "retrain_hours": 0.5}}, "engine.window_minutes", "60"),
    ({"engine": {"window_minutes": 90.0, "ranker_retrain_hours": 1.0, "retrain_hours": 2.0}},
     "engine.window_minutes", "90"),
    ({"engine": {"mode": "reference", "shards": 2}}, "engine.mode", "reference"),
    ({"experiment": {"cells": [{"name": "a", "share": 0.7}, {"name": "b", "share": 0.7}]}},
     "experiment.cells", "0.7"),
    ({"experiment": {"cells": []}}, "experiment.cells", "[]"),
    ({"experiment": {"cells": [{"name": "a"}, {"name": "a"}]}}, "experiment.cells[1].name", "'a'"),
    ({"experiment": {"cells": [{"name": "a", "colour": 1}]}}, "experiment.cells[0].colour", "1"),
    ({"experiment": {"control": "zz"}}, "experiment.control", "'zz'"),
    ({"world": {"n_members": 10, "bogus": 1}}, "world.bogus", "1"),
    ({"engine": {"dayz": 3}}, "engine.dayz", "3"),
    ({"seed": -1}, "seed", "-1"),
    ({"seed": "abc"}, "seed", "'abc'"),
    ({"ranker": {"name": "nope"}}, "ranker.name", "'nope'"),
    ({"ranker": {"name": "learned", "rows": 0}}, "ranker.rows", "0"),
    ({"world": {"response": {"name": "nope"}}}, "world.response.name", "'nope'"),
]


@pytest.mark.parametrize("changes,key,shown", CROSS, ids=[c[1] + "-" + c[2] for c in CROSS])
def test_cross_field_rule_refused_in_one_line(changes, key, shown, tmp_path):
    cfg = base_config()
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            if section == "experiment" and "control" not in value and "cells" in value:
                cfg[section] = {"name": "rel", **value}
            else:
                cfg[section] = {**cfg[section], **value}
        else:
            cfg[section] = value
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, out)
    assert_one_line(err.value, key, shown)
    assert not out.exists()


# ---- names used in paths (issue 16, defect 7) -----------------------------------------------------------
BAD_NAMES = ["../../escaped", "../x", "a/b", "/abs", "..", ".", "x" * 101, "x" * 300, "a\nb", "a\x00b",
             "tab\there", "del\x7f", "back\\slash", "", "   "]
GOOD_NAMES = ["my-exp_1", "a b", "été", "x" * 100, "v1.2"]


@pytest.mark.parametrize("section", ["experiment", "world"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_name_used_in_paths_is_confined(section, name, tmp_path):
    cfg = base_config()
    cfg[section]["name"] = name
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, out)
    assert_one_line(err.value, f"{section}.name", repr(name)[:30])
    assert not out.exists() and snapshot(tmp_path) == {}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_ordinary_names_are_accepted(name):
    from sim.config import experiment_config_from_dict

    cfg = base_config()
    cfg["experiment"]["name"] = name
    assert experiment_config_from_dict(cfg).name == name


# ---- index types (issue 16, defect 1) ------------------------------------------------------------------
@pytest.mark.parametrize("n_genres", [1, 2, 8, 64, 119, 120, 121, 122, 126, 127, 128, 129, 200, 250, 255, 256])
def test_context_one_hots_land_in_their_columns_for_every_n_genres(n_genres):
    """Country and device one-hots sit in their own columns whatever n_genres is (they wrapped
    into the affinity columns past 120 genres with int8 indices)."""
    from sim.features import context_names, visit_context
    from sim.world import build_world

    world = build_world(WorldConfig(n_members=40, n_titles=6, n_genres=n_genres, artworks_min=1,
                                    artworks_max=2, history_length=4), seed=0, horizon_minutes=60.0)
    m = world.members
    member = np.arange(m.n_members)
    ctx = visit_context(m, world.catalog, member, np.zeros(m.n_members))
    names = context_names(n_genres, m.countries)
    country = np.array([i for i, n in enumerate(names) if n.startswith("country_")])
    device = np.array([i for i, n in enumerate(names) if n.startswith("device_")])
    assert ctx.shape[1] == len(names)
    assert np.array_equal(ctx[:, country].argmax(axis=1), m.country.astype(int))
    assert np.array_equal(ctx[:, device].argmax(axis=1), m.device.astype(int))
    assert (ctx[:, country].sum(axis=1) == 1).all() and (ctx[:, device].sum(axis=1) == 1).all()
    affinity = ctx[:, :n_genres]
    assert np.allclose(affinity.sum(axis=1), 1.0, atol=1e-4)   # no one-hot leaked into them


# ---- memory estimate (issue 16, defect 8) ------------------------------------------------------------
HUGE = [
    ({"world": {"n_members": 50_000_000}}, "world.n_members", "50000000"),
    ({"world": {"n_titles": 1_000_000, "artworks_min": 64, "artworks_max": 64}}, "world.n_titles", "1000000"),
    ({"policy_n_draws": 1_000_000_000}, "n_draws", "1000000000"),
    ({"world": {"n_members": 5_000_000, "n_genres": 256, "shown_memory": 4096}}, "world.n_members", "5000000"),
]


def _apply(changes: dict) -> dict:
    cfg = base_config()
    for section, value in changes.items():
        if section == "policy_n_draws":
            cfg["experiment"]["cells"][0]["policy"]["n_draws"] = value
        else:
            cfg[section] = {**cfg[section], **value}
    return cfg


@pytest.mark.parametrize("changes,key,shown", HUGE, ids=[h[1] for h in HUGE])
def test_huge_value_refused_with_an_estimate_before_allocating(changes, key, shown, tmp_path):
    cfg = _apply(changes)
    cfg["engine"]["memory_limit_gb"] = 2.0
    out = tmp_path / "run"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, out)
    assert time.perf_counter() - t0 < 5.0            # refused before the world was built
    assert_one_line(err.value, key, shown, "GB", "engine.memory_limit_gb")
    assert not out.exists()


def test_default_limit_is_the_machines_available_memory(tmp_path):
    cfg = _apply({"policy_n_draws": 1_000_000_000})    # ~1 TB of posterior draws
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    assert_one_line(err.value, "n_draws", "1000000000", "available memory")


def test_memory_override_lets_a_user_who_knows_better_through():
    from sim.config import experiment_config_from_dict
    from sim.memory import check_memory

    cfg = _apply({"world": {"n_members": 50_000_000}})
    cfg["engine"]["memory_limit_gb"] = 1e6
    assert check_memory(experiment_config_from_dict(cfg)) > 2 * 1024 ** 3   # estimate, no refusal


def test_more_shards_than_cpus_warns(capsys):
    import os

    from sim.config import experiment_config_from_dict
    from sim.memory import check_memory

    shards = (os.cpu_count() or 1) + 2
    check_memory(experiment_config_from_dict(base_config(backend="processes", shards=shards)))
    err = capsys.readouterr().err
    assert_one_line(err, "engine.shards", str(shards), "CPUs")


# ---- messages ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.float64(0.0), np.float32(-1.5), np.int64(-3), np.float64("nan")])
def test_numpy_values_print_as_numbers(value):
    with pytest.raises(ConfigError) as err:
        run_experiment(_set(base_config(), "engine.days", value), "/nonexistent/never")
    assert "np." not in str(err.value) and "numpy" not in str(err.value)
    assert_one_line(err.value, "engine.days", str(value.item()))


# ---- import targets -----------------------------------------------------------------------------------
STDLIB_TARGETS = ["this.x", "antigravity.Policy", "os.system", "subprocess.Popen", "json.JSONDecoder"]


@pytest.mark.parametrize("target", STDLIB_TARGETS)
def test_policy_target_in_the_standard_library_is_refused_without_importing(target, capsys, tmp_path):
    module = target.split(".")[0]
    was_imported = module in sys.modules
    cfg = base_config()
    cfg["experiment"]["cells"][0]["policy"] = {"_target_": target}
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    assert_one_line(err.value, "_target_", target)
    assert was_imported or module not in sys.modules
    assert capsys.readouterr().out == ""          # `this` prints the Zen of Python when imported


@pytest.mark.parametrize("target", ["sim.config.WorldConfig", "no_such_module.X", "sim.policies.Nope",
                                    "not a path", "x.", "a..b"])
def test_policy_target_that_is_not_a_policy_class_is_refused(target, tmp_path):
    cfg = base_config()
    cfg["experiment"]["cells"][0]["policy"] = {"_target_": target}
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    assert_one_line(err.value, "_target_", target)


# ---- Ray address (issue 16, defect 9) -------------------------------------------------------------------
@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:9", "ray://no-such-host.invalid:10001",
                                     "not-an-address"])
def test_unreachable_ray_address_fails_fast(address, tmp_path):
    pytest.importorskip("ray")
    cfg = base_config(backend="ray", ray_address=address)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    assert time.perf_counter() - t0 < 10.0
    assert_one_line(err.value, "engine.ray_address", address)
    assert not (tmp_path / "run").exists()
