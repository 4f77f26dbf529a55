"""Gymnasium environments over :class:`sim.gym.loop.VisitLoop`: one step is one member visit
(:class:`HomepageEnv`), or ``num_envs`` visits served together (:class:`HomepageVectorEnv`).

As in the simulator, pages are laid out with the world as it was at the start of their serving
window (``engine.window_minutes``: history and ranker frozen inside it); the single-visit
environment lays out a window's pages together and then serves them one step at a time, the
vectorized one lays out and serves its ``num_envs`` visits together.

Observation (one visit; ``T = ranker.rows * ranker.columns`` tiles in reading order, ``K`` the
most images per title, ``G`` genres, ``d`` the context width)::

    context        Box(d,)          the member's observable context (history, country, device, time)
    title          Box(T,) int64    title on each tile, -1 where nothing is rendered
    familiar       MultiBinary(T)   the member interacted with the tile's title before
    artwork        Box(T, K) int64  flat ids of each tile's candidate images, -1 padded
    mask           MultiBinary(T, K) valid candidates
    artwork_theme  Box(T, K, G)     candidate images' features (what each image emphasises)
    title_genres   Box(T, G)        each tile's title's genre mixture

Action: ``MultiDiscrete([K] * T)``, one image per tile; an index past a title's pool wraps around
it, empty tiles ignore theirs. Reward: the visit's quality plays (``reward="play"``, ``"click"``
or ``"minutes"`` instead). ``info["tile_reward"]`` (T,) credits the reward to its tile, as a
production log would. An episode is ``engine.days`` simulated days of the world; it ends
truncated at the horizon. ``reset(seed=s)`` draws the world from ``s``: same seed, same episode
for the same actions.
"""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.gym.loop import Pages, VisitLoop

#: A world that builds in milliseconds and gives a few thousand visits a simulated day.
DEFAULT_CONFIG: dict = {
    "world": {"name": "gym", "n_members": 2000, "n_titles": 60, "n_genres": 8, "artworks_min": 2,
              "artworks_max": 6, "history_length": 16, "visits_per_day": 1.5},
    "engine": {"days": 2.0},
    "ranker": {"name": "learned", "rows": 4, "columns": 6},
}

OBSERVATION_KEYS = ("context", "title", "familiar", "artwork", "mask", "artwork_theme", "title_genres")


def merged(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict:
    """``base`` with ``extra``'s sections merged in, one level deep (``{"world": {...}}``)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for k, v in (extra or {}).items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def visit_space(loop: VisitLoop) -> spaces.Dict:
    """The observation space of one visit for ``loop``'s world and ranker."""
    T, K = loop.tiles, loop.max_artworks
    cat = loop.world.catalog
    G = cat.n_genres
    return spaces.Dict({
        "context": spaces.Box(-1.0, 1.0, (loop.context_width,), np.float32),
        "title": spaces.Box(-1, cat.n_titles - 1, (T,), np.int64),
        "familiar": spaces.MultiBinary(T),
        "artwork": spaces.Box(-1, cat.n_titles * K - 1, (T, K), np.int64),
        "mask": spaces.MultiBinary((T, K)),
        "artwork_theme": spaces.Box(0.0, 1.0, (T, K, G), np.float32),
        "title_genres": spaces.Box(0.0, 1.0, (T, G), np.float32),
    })


def observations(pages: Pages) -> dict[str, np.ndarray]:
    """Batched observation arrays (leading axis: visits)."""
    return {k: getattr(pages, k) for k in OBSERVATION_KEYS}


class _Episodes:
    """What both environments share: the config, the reward and a fresh :class:`VisitLoop` per
    episode, drawn from the episode's seed."""

    def _setup(self, config: Mapping[str, Any] | None, reward: str) -> None:
        self.sim_config = merged(DEFAULT_CONFIG, config)
        self.reward_name = reward
        self.loop = VisitLoop(self.sim_config, seed=0, reward=reward)   # spaces need a world's shapes

    def _new_loop(self, rng: np.random.Generator) -> VisitLoop:
        return VisitLoop(self.sim_config, seed=int(rng.integers(2**31 - 1)), reward=self.reward_name)


class HomepageEnv(_Episodes, gym.Env):
    """One step = one member visit: see the module docstring.

    ``config``: sections merged over :data:`DEFAULT_CONFIG` (``{"world": {"n_members": 500}}``);
    any world, engine or ranker key of the simulator's schema."""

    metadata = {"render_modes": []}

    def __init__(self, config: Mapping[str, Any] | None = None, reward: str = "quality_play"):
        self._setup(config, reward)
        self.observation_space = visit_space(self.loop)
        self.action_space = spaces.MultiDiscrete(np.full(self.loop.tiles, self.loop.max_artworks))
        self._pages: Pages | None = None
        self._window: Pages | None = None     # the pages of the current serving window
        self._next = 0                        # the next visit of the window

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.loop = self._new_loop(self.np_random)
        self._window, self._next = None, 0
        self._advance()
        return self._observation(), self._info()

    def _advance(self) -> bool:
        """Move to the next visit; False at the horizon. A serving window's pages are laid out
        together, at its start (as in the simulator), then served one visit per step."""
        if self._window is None or self._next >= len(self._window):
            window = self.loop.next_pages()
            if len(window) == 0:
                return False
            self._window, self._next = window, 0
        self._pages = self._window.visit(self._next)
        self._next += 1
        return True

    def step(self, action):
        if self._pages is None:
            raise RuntimeError("call reset() before step()")
        served = self.loop.serve(self._pages, np.asarray(action)[None, :])
        info = {"tile_reward": served["tile_reward"][0], "rendered": served["rendered"][0],
                "member": int(self._pages.member[0]), "minute": float(self._pages.time[0])}
        truncated = not self._advance()
        return self._observation(), float(served["reward"][0]), False, truncated, {**self._info(), **info}

    def _observation(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in observations(self._pages).items()}

    def _info(self) -> dict:
        return {"visits": self.loop.visits_served, "impressions": self.loop.impressions_served}


class HomepageVectorEnv(_Episodes, VectorEnv):
    """``num_envs`` visits per step, served as one batch (the simulator's batched hot path):
    slot ``i`` of a step is the i-th next visit of the same world. All slots end together,
    truncated, when fewer than ``num_envs`` visits remain before the horizon (those few are not
    served); the next ``step`` starts a new episode (``autoreset_mode`` NEXT_STEP)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 64, config: Mapping[str, Any] | None = None,
                 reward: str = "quality_play"):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self._setup(config, reward)
        self.single_observation_space = visit_space(self.loop)
        self.single_action_space = spaces.MultiDiscrete(np.full(self.loop.tiles, self.loop.max_artworks))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._pages: Pages | None = None
        self._done = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.loop = self._new_loop(self.np_random)
        if not self.loop.remaining_at_least(self.num_envs):
            raise ValueError(f"num_envs = {self.num_envs} is more than the visits of a whole episode; "
                             "use fewer, or more members, visits_per_day or days")
        self._pages = self.loop.next_pages(self.num_envs)
        self._done = False
        return observations(self._pages), self._info()

    def step(self, actions):
        if self._pages is None:
            raise RuntimeError("call reset() before step()")
        n = self.num_envs
        if self._done:                      # NEXT_STEP autoreset: this step starts a new episode
            obs, info = self.reset()
            return obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), info
        served = self.loop.serve(self._pages, np.asarray(actions).reshape(n, -1))
        self._done = not self.loop.remaining_at_least(n)
        if not self._done:
            self._pages = self.loop.next_pages(n)
        info = {**self._info(), "tile_reward": served["tile_reward"], "rendered": served["rendered"]}
        return (observations(self._pages), served["reward"], np.zeros(n, bool), np.full(n, self._done), info)

    def _info(self) -> dict:
        return {"visits": self.loop.visits_served, "impressions": self.loop.impressions_served}
