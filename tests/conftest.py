"""Small shared fixtures: one tiny world and a batch of random impressions on it."""
from __future__ import annotations

import pytest

from sim.config import WorldConfig
from sim.streams import generator
from sim.testing import make_decision_batch
from sim.world import build_world


@pytest.fixture(scope="session")
def world():
    """300 members, 60 titles (3-12 artworks each), 8 genres, three days: builds in ~0.1 s."""
    return build_world(WorldConfig(n_members=300, n_titles=60, n_genres=8), seed=0,
                       horizon_minutes=1440 * 3)


@pytest.fixture(scope="session")
def catalog(world):
    return world.catalog


@pytest.fixture(scope="session")
def decision_batch(world):
    """200 random impressions (session-wide: tests must not modify it)."""
    return make_decision_batch(world.catalog, 200, generator(0, "policy", 100),
                               n_members=world.members.n_members)
