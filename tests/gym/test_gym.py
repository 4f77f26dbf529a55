"""The Gymnasium environment: passes Gymnasium's checker, is deterministic per seed, counts the
rewards the simulator's metrics count, lets the world evolve, and a learning agent beats random."""
from __future__ import annotations

import ast
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim.gym
from experiments.gym_agents import RandomAgent, ThompsonAgent, compare, play
from sim.gym import ENV_ID, HomepageEnv, HomepageVectorEnv

#: A small world: ~500 visits a simulated day, 30 titles of 2-4 images, a 3 x 4 page.
SMALL = {"world": {"n_members": 400, "n_titles": 30, "artworks_max": 4}, "engine": {"days": 0.5},
         "ranker": {"rows": 3, "columns": 4}}


def test_passes_gymnasiums_env_checker():
    env = HomepageEnv(SMALL)
    check_env(env, skip_render_check=True)
    assert env.action_space.shape == (12,) and env.observation_space["artwork_theme"].shape == (12, 4, 8)


def rollout(env, seed: int, steps: int) -> list:
    obs, _ = env.reset(seed=seed)
    actions = np.random.default_rng(99)
    out = [obs]
    for _ in range(steps):
        obs, reward, _, truncated, info = env.step(actions.integers(0, 4, size=env.action_space.shape))
        out.append((obs, reward, truncated, info["tile_reward"]))
        if np.any(truncated):
            break
    return out


def flat(tree) -> list[np.ndarray]:
    if isinstance(tree, dict):
        return [a for k in sorted(tree) for a in flat(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [a for x in tree for a in flat(x)]
    return [np.asarray(tree)]


@pytest.mark.parametrize("make", [lambda: HomepageEnv(SMALL), lambda: HomepageVectorEnv(16, SMALL)])
def test_same_seed_same_episode_other_seed_differs(make):
    a, b, c = (flat(rollout(make(), seed, 40)) for seed in (3, 3, 4))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a) != len(c) or not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_reward_is_the_visits_quality_plays_as_the_simulator_counts_them():
    env = HomepageVectorEnv(32, SMALL)
    rewards = play(env, RandomAgent(0), seed=1)
    summary = env.loop.summary()
    cell = summary["cells"]["agent"]
    quality_plays = cell["take_fraction"]["estimate"] * cell["impressions"]
    assert rewards.size == env.loop.visits_served > 100
    assert rewards.sum() == pytest.approx(quality_plays, abs=1e-6)
    assert set(np.unique(rewards)) <= {0.0, 1.0}     # session model: at most one quality play a visit


def test_the_world_evolves_ranker_retrains_and_histories_grow():
    env = HomepageVectorEnv(64, {**SMALL, "engine": {"days": 1.5, "ranker_retrain_hours": 12}})
    env.reset(seed=0)
    plays_before = env.loop.world.members.n_plays.sum()
    play(env, RandomAgent(0), seed=0)
    # reset() inside play() drew the same world again; the episode then ran to the horizon.
    assert env.loop.ranker.version_ == 2                       # retrains at 12 h and 24 h (not 36 h)
    assert env.loop.world.members.n_plays.sum() > plays_before


def test_an_action_past_a_pool_wraps_around_it():
    env = HomepageEnv(SMALL)
    obs, _ = env.reset(seed=0)
    tiles = np.flatnonzero(obs["title"] >= 0)
    pool = obs["mask"].sum(axis=1)
    env.step(pool)                                            # index == pool size -> candidate 0
    assert env.loop.agent.action_.tolist() == [0] * tiles.size


def test_registered_id_and_vector_entry_point():
    env = gym.make(ENV_ID, config=SMALL)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    envs = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", config=SMALL)
    obs, _ = envs.reset(seed=0)
    assert obs["title"].shape == (8, 12) and envs.observation_space.contains(obs)


def test_vector_episode_ends_truncated_then_restarts():
    env = HomepageVectorEnv(100, SMALL)
    env.reset(seed=0)
    steps, truncated = 0, np.zeros(100, bool)
    while not truncated.any():
        _, _, _, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    assert truncated.all() and steps == env.loop.visits_served // 100
    obs, reward, _, truncated, _ = env.step(env.action_space.sample())   # NEXT_STEP autoreset
    assert not truncated.any() and not reward.any() and env.loop.visits_served == 0


def test_thompson_agent_beats_random_by_more_than_three_standard_errors():
    """Same world and visits (seed 0); images differ a lot (appeal_sd 1.5), so the per-image
    posterior has something to find in two simulated days (~5,600 visits per agent)."""
    config = {"world": {"n_titles": 30, "artworks_max": 4, "response": {"appeal_sd": 1.5}}, "engine": {"days": 2.0}}
    res = compare(config, 256, seed=0)
    d = res["difference"]
    assert d["estimate"] > 3 * d["se"], d


def test_only_sim_gym_imports_gymnasium():
    root = Path(sim.gym.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "gym":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [str(path) for n in names if n.split(".")[0] == "gymnasium"]
    assert not offenders


def test_an_arrival_hour_with_more_visits_than_visit_ids_is_an_error(monkeypatch):
    """As in the simulator (tests/scale): ids of one hour's visits must not spill into the next
    hour's, so more visits than ids is refused, naming the hour."""
    monkeypatch.setattr("sim.logs.VISIT_ID_BITS", 1)          # 2 visit ids per arrival hour
    env = HomepageVectorEnv(100, SMALL)                       # ~10 visits an hour: 100 need hours
    with pytest.raises(RuntimeError, match=r"visits in arrival hour \d+: more than 2 \(a smaller world.n_members"):
        env.reset(seed=0)
