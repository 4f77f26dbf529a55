"""The simulated world: catalog (what is watched), members (who watches), response (how they choose:
``independent`` tiles, or ``session``: one scan of the page per visit).

Each part is replaceable on its own; :func:`build_world` draws all three from the ``world`` stream
(members block by block, each block's from its own key of it, so a shard draws only its own).
``world.source=movielens`` draws titles, tastes and visit rates from MovieLens 100k instead
(:mod:`sim.world.movielens`); the rest of the engine is the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.config import EngineConfig, WorldConfig
from sim.streams import generator
from sim.world.catalog import Catalog, build_catalog
from sim.world.members import Members, block_members, draw_member_block, empty_members
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


def build_world(cfg: WorldConfig, seed: int, horizon_minutes: float,
                member_block: int = EngineConfig.member_block,
                blocks: range | None = None) -> World:
    """Draw a world. Same (cfg, seed, horizon, member_block) -> identical arrays.

    Members are drawn block by block (``member_block`` members each, ``engine.member_block``),
    each block from its own stream, so a shard draws only ``blocks`` (None: every block) and
    the others' rows stay zero (:func:`sim.world.members.empty_members`); what it draws is the
    same whichever blocks it draws. Block 0 continues the ``world`` stream after the catalog
    (a world of one block is drawn as one stream) and fixes the logit scale of fit; block
    ``b`` >= 1 draws from the ``world`` stream keyed by ``b``. The catalog is drawn whole."""
    rng = generator(seed, "world")
    catalog, truth = draw_catalog(cfg, horizon_minutes, rng)
    if cfg.title_quality:
        truth["quality"] = np.asarray(cfg.title_quality, dtype=np.float32)
    M, G = cfg.n_members, cfg.n_genres
    members = empty_members(cfg, catalog.n_genres)
    tastes = np.zeros((M, G), dtype=np.float32)      # rows of the drawn blocks only (see above)
    visit_rate = None
    if cfg.source == "movielens":
        # Members resample MovieLens users as a whole population: their tastes and visit rates
        # are drawn whole in every process (MovieLens worlds are not shard-local; their
        # profiles and histories are, as in synthetic worlds).
        tastes, visit_rate, _ = movielens_members(cfg, rng)
    first = min(member_block, M)
    drawn = range(math.ceil(M / member_block)) if blocks is None else blocks
    block0 = tastes[:first] if cfg.source == "movielens" else member_tastes(cfg, catalog, first, rng)
    if 0 in drawn:
        tastes[:first] = block0
    # Standardise fit on a sample of (member, title) pairs so weights are in logit units. The
    # sample is of block 0's members, whose tastes every process draws.
    sm = rng.integers(0, first, size=20_000)
    st = rng.integers(0, catalog.n_titles, size=20_000)
    raw = np.einsum("ng,ng->n", block0[sm], catalog.title_genres[st])
    fit_sd = float(raw.std()) or 1.0
    response = cfg.response.cls(cfg.response.params, tastes, catalog.title_genres, catalog.artwork_theme,
                                truth["quality"], truth["appeal"], truth["representativeness"],
                                float(raw.mean()), fit_sd)
    for b in drawn:
        ids = block_members(range(b, b + 1), member_block, M)
        lo, hi = ids.start, ids.stop
        block_rng = rng if b == 0 else generator(seed, "world", b)
        if b > 0 and cfg.source != "movielens":
            tastes[lo:hi] = member_tastes(cfg, catalog, hi - lo, block_rng)
        draw_member_block(members, cfg, catalog, tastes[lo:hi], lo, block_rng)
    if visit_rate is not None:      # data-driven activity replaces the drawn log-normal rates
        members.visit_rate = visit_rate
    return World(cfg, catalog, members, response)


def member_tastes(cfg: WorldConfig, catalog: Catalog, n: int, rng: np.random.Generator) -> np.ndarray:
    """Hidden genre tastes (n, n_genres) float32: sparse, tilted toward popular genres."""
    alpha = np.maximum(cfg.taste_concentration * cfg.n_genres * catalog.genre_share, 1e-3)
    tastes = np.empty((n, cfg.n_genres), dtype=np.float32)
    for lo in range(0, n, 1 << 18):     # chunks bound the float64 temporary
        hi = min(lo + (1 << 18), n)
        tastes[lo:hi] = rng.dirichlet(alpha, size=hi - lo)
    return tastes
