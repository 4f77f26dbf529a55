"""The closed loop as a Gymnasium environment: one step is one member visit.

    import gymnasium as gym
    import sim.gym                                   # registers the ids below
    env = gym.make("homesim/Homepage-v0")            # or sim.gym.HomepageEnv(config={...})
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    envs = gym.make_vec("homesim/Homepage-v0", num_envs=256)   # 256 visits per step, one batch

The world, ranker, arrivals, history and responses are the simulator's (:mod:`sim.gym.loop`);
learning happens in the agent. This is the only package of ``sim`` that imports gymnasium.
"""
from __future__ import annotations

import gymnasium as gym

from sim.gym.env import DEFAULT_CONFIG, HomepageEnv, HomepageVectorEnv
from sim.gym.loop import REWARDS, VisitLoop

ENV_ID = "homesim/Homepage-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="sim.gym.env:HomepageEnv",
                 vector_entry_point="sim.gym.env:HomepageVectorEnv", disable_env_checker=True)

__all__ = ["DEFAULT_CONFIG", "ENV_ID", "HomepageEnv", "HomepageVectorEnv", "REWARDS", "VisitLoop"]
