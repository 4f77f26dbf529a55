"""Two agents for the Gymnasium environment (:mod:`sim.gym`): random images, and per-image
Thompson sampling that learns from the tiles' rewards. ``python -m experiments.gym_agents``
runs both on the same world (same seed) and prints the mean reward per visit with its 95 %
interval and the difference.

    from experiments.gym_agents import ThompsonAgent, play
    import sim.gym
    env = sim.gym.HomepageVectorEnv(num_envs=256)
    agent = ThompsonAgent(artwork_ids(env.single_observation_space), seed=0)
    rewards = play(env, agent, seed=0)          # reward per visit, shape (visits,)

Agents act on batched observations (leading axis: visits); the single-visit environment's
observations get that axis added by :func:`play`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sim.metrics import Z95
from sim.outputs import atomic_write_text


def artwork_ids(space) -> int:
    """How many flat artwork ids an observation space's ``artwork`` entry can hold."""
    return int(space["artwork"].high.max()) + 1


class RandomAgent:
    """A uniformly random valid image per tile (the exploration logger of the simulator)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict) -> np.ndarray:
        """Actions (v, T): a uniform index among each tile's valid candidates."""
        n_valid = np.maximum(obs["mask"].sum(axis=-1), 1)                 # (v, T)
        return (self.rng.random(n_valid.shape) * n_valid).astype(np.int64)

    def learn(self, obs: dict, actions: np.ndarray, info: dict) -> None:
        pass


class ThompsonAgent:
    """Beta-Bernoulli Thompson sampling per image (flat artwork id), like the simulator's
    ``thompson`` policy but learning after every step: each rendered tile is one trial of the
    image shown, a success if the tile earned the reward.

    ``alpha_``, ``beta_`` : ndarray, shape (n_artworks,)   posterior parameters (prior Beta(1, 1))
    """

    def __init__(self, n_artworks: int, seed: int = 0, prior: tuple[float, float] = (1.0, 1.0)):
        self.rng = np.random.default_rng(seed)
        self.alpha_ = np.full(n_artworks, prior[0])
        self.beta_ = np.full(n_artworks, prior[1])

    def act(self, obs: dict) -> np.ndarray:
        """Actions (v, T): per tile the candidate whose posterior draw is highest."""
        ids = obs["artwork"]                                               # (v, T, K)
        safe = np.maximum(ids, 0)
        draw = self.rng.beta(self.alpha_[safe], self.beta_[safe])
        draw[obs["mask"] == 0] = -1.0
        return draw.argmax(axis=-1)

    def learn(self, obs: dict, actions: np.ndarray, info: dict) -> None:
        """Add each rendered tile's outcome to the posterior of the image it showed."""
        rendered = info["rendered"]                                        # (v, T)
        shown = np.take_along_axis(obs["artwork"], actions[..., None], axis=-1)[..., 0]
        ok = rendered & (shown >= 0)
        success = np.minimum(info["tile_reward"][ok], 1.0)
        np.add.at(self.alpha_, shown[ok], success)
        np.add.at(self.beta_, shown[ok], 1.0 - success)


def play(env, agent, seed: int) -> np.ndarray:
    """One episode of ``env`` (single or vector) with ``agent``; the reward of every visit served."""
    vector = hasattr(env, "num_envs")
    obs, _ = env.reset(seed=seed)
    rewards = []
    while True:
        batch = obs if vector else {k: v[None] for k, v in obs.items()}
        actions = agent.act(batch)
        obs_next, reward, terminated, truncated, info = env.step(actions if vector else actions[0])
        if not vector:
            info = {k: (np.asarray(v)[None] if k in ("tile_reward", "rendered") else v) for k, v in info.items()}
        agent.learn(batch, actions, info)
        rewards.append(np.atleast_1d(reward))
        obs = obs_next
        if np.any(truncated) or np.any(terminated):
            return np.concatenate(rewards)


def mean_interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error."""
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))


def compare(config: dict | None, num_envs: int, seed: int, reward: str = "quality_play") -> dict:
    """Random and Thompson agents on the same world and visits (seed); means, SEs, difference."""
    from sim.gym import HomepageVectorEnv

    out = {}
    for name in ("random", "thompson"):
        env = HomepageVectorEnv(num_envs, config=config, reward=reward)
        agent = (RandomAgent(seed) if name == "random"
                 else ThompsonAgent(artwork_ids(env.single_observation_space), seed))
        t = time.perf_counter()
        rewards = play(env, agent, seed)
        out[name] = {"rewards": rewards, "seconds": time.perf_counter() - t}
    (ma, sa), (mb, sb) = (mean_interval(out[k]["rewards"]) for k in ("random", "thompson"))
    out["difference"] = {"estimate": mb - ma, "se": float(np.hypot(sa, sb))}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Random vs per-image Thompson sampling in the Gymnasium environment")
    ap.add_argument("--num-envs", type=int, default=256, help="visits per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=float, default=2.0, help="simulated days per episode")
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--reward", default="quality_play", help="quality_play, play, click or minutes")
    ap.add_argument("--out", help="also write the comparison (without timings) to this file")
    args = ap.parse_args(argv)
    config = {"world": {"n_members": args.members}, "engine": {"days": args.days}}
    res = compare(config, args.num_envs, args.seed, args.reward)
    text = report(res, args.reward)
    print(text, end="")
    print("seconds: " + ", ".join(f"{name} {res[name]['seconds']:.1f}" for name in ("random", "thompson")))
    if args.out:
        atomic_write_text(args.out, text)     # whole or absent, whenever the run is stopped


def report(res: dict, reward: str) -> str:
    """The comparison as printed: each agent's mean reward per visit, then the difference (95 % CIs)."""
    lines = []
    for name in ("random", "thompson"):
        m, se = mean_interval(res[name]["rewards"])
        lines.append(f"{name:9s} {m:.4f} {reward} per visit [{m - Z95 * se:.4f}, {m + Z95 * se:.4f}] "
                     f"({res[name]['rewards'].size:,} visits)")
    d = res["difference"]
    lines.append(f"thompson - random: {d['estimate']:+.4f} [{d['estimate'] - Z95 * d['se']:+.4f}, "
                 f"{d['estimate'] + Z95 * d['se']:+.4f}] per visit (z = {d['estimate'] / d['se']:.1f})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
