"""The simulated world: catalog (what is watched), members (who watches), response (how they choose:
``independent`` tiles, or ``session``: one scan of the page per visit).

Each part is replaceable on its own; :func:`build_world` draws all three from the ``world`` stream.
``world.source=movielens`` draws titles, tastes and visit rates from MovieLens 100k instead
(:mod:`sim.world.movielens`); the rest of the engine is the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import WorldConfig
from sim.streams import generator
from sim.world.catalog import Catalog, build_catalog
from sim.world.members import Members, build_members
from sim.world.movielens import movielens_catalog, movielens_members
from sim.world.response import SESSION_END_REASONS, Outcomes, Page, ResponseModel
from sim.world.session import SessionResponse

__all__ = ["Catalog", "Members", "ResponseModel", "SessionResponse", "Outcomes", "Page",
           "SESSION_END_REASONS", "World", "build_world", "draw_catalog"]


@dataclass
class World:
    config: WorldConfig
    catalog: Catalog
    members: Members
    response: ResponseModel


def draw_catalog(cfg: WorldConfig, horizon_minutes: float, rng: np.random.Generator):
    """The catalog and hidden title truth of ``cfg.source`` (synthetic, or from MovieLens)."""
    if cfg.source == "movielens":
        return movielens_catalog(cfg, horizon_minutes, rng)
    return build_catalog(cfg, horizon_minutes, rng)


def build_world(cfg: WorldConfig, seed: int, horizon_minutes: float) -> World:
    """Draw a world. Same (cfg, seed, horizon) -> identical arrays."""
    rng = generator(seed, "world")
    catalog, truth = draw_catalog(cfg, horizon_minutes, rng)
    if cfg.title_quality:
        truth["quality"] = np.asarray(cfg.title_quality, dtype=np.float32)
    M, G = cfg.n_members, cfg.n_genres
    visit_rate = None
    if cfg.source == "movielens":
        tastes, visit_rate, _ = movielens_members(cfg, rng)
    else:
        # Sparse tastes, tilted toward popular genres.
        alpha = np.maximum(cfg.taste_concentration * G * catalog.genre_share, 1e-3)
        tastes = np.empty((M, G), dtype=np.float32)
        for lo in range(0, M, 1 << 18):
            hi = min(lo + (1 << 18), M)
            tastes[lo:hi] = rng.dirichlet(alpha, size=hi - lo)
    # Standardise fit on a sample of (member, title) pairs so weights are in logit units.
    sm = rng.integers(0, M, size=20_000)
    st = rng.integers(0, catalog.n_titles, size=20_000)
    raw = np.einsum("ng,ng->n", tastes[sm], catalog.title_genres[st])
    fit_sd = float(raw.std()) or 1.0
    response = cfg.response.cls(cfg.response.params, tastes, catalog.title_genres, catalog.artwork_theme,
                                truth["quality"], truth["appeal"], truth["representativeness"],
                                float(raw.mean()), fit_sd)
    members = build_members(cfg, catalog, tastes, rng)
    if visit_rate is not None:      # data-driven activity replaces the drawn log-normal rates
        members.visit_rate = visit_rate
    return World(cfg, catalog, members, response)
