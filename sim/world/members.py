"""Who watches: members, their observable profile and their viewing history.

Hidden tastes live in :class:`sim.world.response.ResponseModel`; visit rates are read only by the
engine's arrival process. What is here is what production could observe: country (time zone),
device and viewing history, which changes as members watch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import COUNTRY_UTC_OFFSETS, DEVICE_VISIBLE_COLUMNS
from sim.kernels.history import in_recent
from sim.metrics import scatter_add_rows

DEVICES = tuple(DEVICE_VISIBLE_COLUMNS)
DEVICE_SHARE = np.array([0.45, 0.2, 0.1, 0.25])  # tv, web, tablet, mobile


@dataclass
class Members:
    """Member profiles and history (struct of arrays).

    Attributes
    ----------
    country : ndarray, shape (n_members,), int8      index into ``countries``
    utc_offset_hours : ndarray, shape (n_members,), float32
    device : ndarray, shape (n_members,), int8       index into ``DEVICES``
    visit_rate : ndarray, shape (n_members,), float64  mean visits per minute (simulator only)
    genre_plays : ndarray, shape (n_members, n_genres), float32
        Observable plays per genre (each play adds the title's genre mixture).
    recent_titles : ndarray, shape (n_members, history_length), int32
        Ring buffer of titles the member interacted with (clicked or played); ``-1`` is empty.
        Rows of members a process did not draw (another shard's) are all 0: never read.
    history_cursor : ndarray, shape (n_members,), int32   next ring slot to write
    n_plays : ndarray, shape (n_members,), int32
    """

    countries: tuple[str, ...]
    country: np.ndarray
    utc_offset_hours: np.ndarray
    device: np.ndarray
    visit_rate: np.ndarray
    genre_plays: np.ndarray
    recent_titles: np.ndarray
    history_cursor: np.ndarray
    n_plays: np.ndarray

    @property
    def n_members(self) -> int:
        return int(self.country.shape[0])

    def has_interacted(self, member: np.ndarray, title: np.ndarray) -> np.ndarray:
        """Boolean (n,): did ``member[i]`` interact with ``title[i]`` recently? (Compiled:
        :func:`sim.kernels.history.in_recent`.)"""
        member, title = np.asarray(member), np.asarray(title)
        if member.shape != title.shape or member.ndim != 1:     # the kernel does not check bounds
            raise ValueError(f"member and title must be 1-d of one length, got {member.shape}, {title.shape}")
        if member.size and (member.min() < 0 or member.max() >= self.recent_titles.shape[0]):
            raise IndexError(f"member ids must be in [0, {self.recent_titles.shape[0]}), "
                             f"got [{member.min()}, {member.max()}]")
        return in_recent(self.recent_titles, member, title)

    def record_interactions(self, member: np.ndarray, title: np.ndarray, title_genres: np.ndarray,
                            played: np.ndarray) -> None:
        """Append interactions to the history (vectorized; a member may appear several times).

        ``played`` (n,) bool marks plays, which also update ``genre_plays`` and ``n_plays``.
        """
        if member.size == 0:
            return
        order = np.argsort(member, kind="stable")
        member, title, played = member[order], title[order], played[order]
        keep, slot = ring_append_slots(member, self.history_cursor, self.recent_titles.shape[1])
        self.recent_titles[member[keep], slot[keep]] = title[keep]
        if played.any():
            scatter_add_rows(self.genre_plays, member[played], title_genres[title[played]])
            np.add.at(self.n_plays, member[played], 1)


def ring_append_slots(member: np.ndarray, cursor: np.ndarray, size: int):
    """Slots for appending events to per-member ring buffers, advancing ``cursor`` in place.

    ``member`` (n,) must be sorted (stable, so that a member's events keep their order).
    Returns ``(keep, slot)``, both (n,): only the last ``size`` events of a member survive.
    """
    # Rank of each event among the same member's events in this call -> distinct ring slots.
    start = np.r_[0, np.flatnonzero(np.diff(member)) + 1]
    counts = np.diff(np.r_[start, member.size])
    rank = np.arange(member.size) - np.repeat(start, counts)
    keep = rank >= np.repeat(counts, counts) - size
    slot = (cursor[member] + rank) % size
    cursor[member[start]] = (cursor[member[start]] + counts) % size
    return keep, slot


def block_members(blocks: range, member_block: int, n_members: int) -> range:
    """Member ids of the consecutive member ``blocks`` (the last block may be short)."""
    return range(min(blocks.start * member_block, n_members), min(blocks.stop * member_block, n_members))


def empty_members(cfg, n_genres: int) -> Members:
    """Members of ``cfg`` with nothing drawn yet: zero arrays the size of the whole population.

    The arrays are indexed by member id, but only the rows of the blocks a process draws
    (:func:`draw_member_block`) are ever written: the operating system backs an untouched page of
    a large zeroed array by no memory, so a shard's resident memory follows its own members."""
    M, H = cfg.n_members, cfg.history_length
    return Members(
        countries=tuple(cfg.countries), country=np.zeros(M, dtype=np.int8),
        utc_offset_hours=np.zeros(M, dtype=np.float32), device=np.zeros(M, dtype=np.int8),
        visit_rate=np.zeros(M), genre_plays=np.zeros((M, n_genres), dtype=np.float32),
        recent_titles=np.zeros((M, H), dtype=np.int32),
        history_cursor=np.zeros(M, dtype=np.int32), n_plays=np.zeros(M, dtype=np.int32))


def draw_member_block(members: Members, cfg, catalog, tastes: np.ndarray, lo: int,
                      rng: np.random.Generator) -> None:
    """Draw the profiles and starting history of members ``lo .. lo + len(tastes)`` in place.

    ``tastes`` (n, n_genres): their hidden tastes, which their starting history follows."""
    M, G = tastes.shape[0], catalog.n_genres
    rows = slice(lo, lo + M)
    country = rng.integers(0, len(cfg.countries), size=M).astype(np.int8)
    offsets = np.array([COUNTRY_UTC_OFFSETS[c] for c in cfg.countries], dtype=np.float32)
    device = rng.choice(len(DEVICES), size=M, p=DEVICE_SHARE).astype(np.int8)
    # Log-normal visit rates with the configured mean (visits/day -> visits/minute).
    s = cfg.visit_rate_sigma
    members.visit_rate[rows] = cfg.visits_per_day / 1440.0 * np.exp(s * rng.standard_normal(M) - 0.5 * s * s)
    members.country[rows], members.utc_offset_hours[rows], members.device[rows] = country, offsets[country], device
    members.recent_titles[rows] = -1

    # Starting history: a Poisson number of past plays per member; genre from the member's taste,
    # title within that genre by popularity among titles already launched.
    n0 = rng.poisson(cfg.initial_plays, size=M)
    player = np.repeat(np.arange(M), n0)
    if player.size == 0:
        return
    cum_taste = np.cumsum(tastes, axis=1)
    genre = np.empty(player.size, dtype=np.int64)
    for a in range(0, player.size, 1 << 20):  # chunks bound the (chunk, G) temporary
        b = min(a + (1 << 20), player.size)
        u = rng.random(b - a)[:, None]
        genre[a:b] = np.minimum((cum_taste[player[a:b]] < u).sum(axis=1), G - 1)
    title = np.full(player.size, -1, dtype=np.int64)
    available = catalog.launch_time <= 0
    for g in range(G):
        in_g = np.flatnonzero((catalog.primary_genre == g) & available)
        who = np.flatnonzero(genre == g)
        if in_g.size == 0 or who.size == 0:
            continue
        cw = np.cumsum(catalog.popularity_prior[in_g].astype(np.float64))
        pick = np.searchsorted(cw, rng.random(who.size) * cw[-1], side="right")
        title[who] = in_g[np.minimum(pick, in_g.size - 1)]
    ok = np.flatnonzero(title >= 0)
    # In chunks: one call would hold (plays, genres) temporaries, about 1.5 GB at 1M members.
    # Plays are in member order, so chunking changes neither the rings nor the sums.
    for a in range(0, ok.size, 1 << 20):
        part = ok[a:a + (1 << 20)]
        members.record_interactions(lo + player[part], title[part], catalog.title_genres,
                                    np.ones(part.size, dtype=bool))
