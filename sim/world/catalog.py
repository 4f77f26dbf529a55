"""What is watched: titles, their genre mixtures and their artwork pools (observable metadata).

Struct-of-arrays: no Python object per title or artwork. Artworks are numbered globally ("flat
artwork id"); ``pool[t, k]`` is the flat id of title ``t``'s k-th artwork (``-1`` pads pools
shorter than ``max_artworks``). Hidden ground truth about titles and artworks (quality, appeal,
representativeness) lives in :class:`sim.world.response.ResponseModel`, not here, so a policy
handed a ``Catalog`` cannot cheat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Catalog:
    """Titles and artworks.

    Attributes
    ----------
    title_genres : ndarray, shape (n_titles, n_genres), float32
        Genre mixture of each title (rows sum to 1).
    primary_genre : ndarray, shape (n_titles,), int32
    popularity_prior : ndarray, shape (n_titles,), float32
        Pre-launch hype (marketing, box office); observable, mean 1.
    launch_time : ndarray, shape (n_titles,), float64
        Simulated minute at which the title becomes available (0 for the back catalog).
    pool : ndarray, shape (n_titles, max_artworks), int32
        Flat artwork ids per title, ``-1`` padded.
    pool_size : ndarray, shape (n_titles,), int32
    artwork_title : ndarray, shape (n_artworks,), int32
    artwork_slot : ndarray, shape (n_artworks,), int32
        Position of the artwork inside its title's pool (0 is the title's default image).
    artwork_theme : ndarray, shape (n_artworks, n_genres), float32
        What the image emphasises (rows sum to 1).
    genre_share : ndarray, shape (n_genres,), float64
        How popular each genre is across members (sums to 1).
    """

    title_genres: np.ndarray
    primary_genre: np.ndarray
    popularity_prior: np.ndarray
    launch_time: np.ndarray
    pool: np.ndarray
    pool_size: np.ndarray
    artwork_title: np.ndarray
    artwork_slot: np.ndarray
    artwork_theme: np.ndarray
    genre_share: np.ndarray

    @property
    def n_titles(self) -> int:
        return int(self.title_genres.shape[0])

    @property
    def n_genres(self) -> int:
        return int(self.title_genres.shape[1])

    @property
    def n_artworks(self) -> int:
        return int(self.artwork_title.shape[0])

    @property
    def max_artworks(self) -> int:
        return int(self.pool.shape[1])

    def launched(self, now: float) -> np.ndarray:
        """Boolean mask, shape (n_titles,), of titles available at minute ``now``."""
        return self.launch_time <= now


def genre_shares(n_genres: int) -> np.ndarray:
    """Zipf-like popularity of genres (a few big genres, a long tail)."""
    share = 1.0 / np.arange(1, n_genres + 1) ** 0.7
    return share / share.sum()


def build_catalog(cfg, horizon_minutes: float, rng: np.random.Generator):
    """Draw a catalog and the hidden per-title/per-artwork truth.

    Returns ``(catalog, truth)`` where ``truth`` is a dict with ``quality`` (n_titles,),
    ``appeal`` and ``representativeness`` (n_artworks,).
    """
    T, G = cfg.n_titles, cfg.n_genres
    share = genre_shares(G)
    # A title's primary genre follows genre popularity; its mixture is a sparse Dirichlet around it.
    primary = rng.choice(G, size=T, p=share)
    mix = rng.dirichlet(np.full(G, cfg.title_genre_concentration), size=T)
    title_genres = 0.5 * mix
    title_genres[np.arange(T), primary] += 0.5
    primary = title_genres.argmax(axis=1)
    quality = rng.standard_normal(T)
    # Hype is correlated with quality, but loosely: the popularity prior is a noisy signal.
    # ``hype_spread`` 0 makes it flat (a world where no title starts ahead).
    popularity = np.exp(cfg.hype_spread * (0.5 * quality + 0.8 * rng.standard_normal(T)))
    popularity /= popularity.mean()
    launch_time = draw_launch_times(cfg, T, horizon_minutes, rng)
    catalog, truth = draw_artworks(cfg, title_genres, primary, popularity, launch_time, share, rng)
    truth["quality"] = quality.astype(np.float32)
    return catalog, truth


def draw_launch_times(cfg, n_titles: int, horizon_minutes: float, rng: np.random.Generator) -> np.ndarray:
    """Launch minute per title, shape (n_titles,): ``launch_share`` of them launch during the run."""
    launch_time = np.zeros(n_titles)
    n_new = int(round(cfg.launch_share * n_titles))
    if n_new:
        new = rng.choice(n_titles, size=n_new, replace=False)
        launch_time[new] = rng.uniform(0.0, horizon_minutes, size=n_new)
    return launch_time


def draw_artworks(cfg, title_genres: np.ndarray, primary: np.ndarray, popularity: np.ndarray,
                  launch_time: np.ndarray, share: np.ndarray, rng: np.random.Generator):
    """Draw every title's artwork pool around given titles (synthetic or data-driven).

    ``title_genres`` (n_titles, n_genres), ``primary``, ``popularity``, ``launch_time`` (n_titles,),
    ``share`` (n_genres,) genre popularity. Returns ``(catalog, truth)`` with ``truth`` holding
    ``appeal`` and ``representativeness`` (n_artworks,); the caller adds ``quality``.
    """
    T, G = title_genres.shape
    pool_size = rng.integers(cfg.artworks_min, cfg.artworks_max + 1, size=T)
    A = int(pool_size.sum())
    offset = np.concatenate([[0], np.cumsum(pool_size)])
    artwork_title = np.repeat(np.arange(T), pool_size)
    artwork_slot = np.arange(A) - offset[artwork_title]
    K = int(pool_size.max())
    pool = np.full((T, K), -1, dtype=np.int32)
    pool[artwork_title, artwork_slot] = np.arange(A)

    # Representativeness r: how faithfully the image shows what the title is. The theme mixes
    # the title's own genres (weight r) with one eye-catching genre drawn by popularity
    # (weight 1 - r); low-r images get extra appeal -- that is clickbait.
    representativeness = rng.beta(3.0, 1.5, size=A)
    representativeness[artwork_slot == 0] = np.maximum(representativeness[artwork_slot == 0], 0.6)
    lure = rng.choice(G, size=A, p=share)
    theme = representativeness[:, None] * title_genres[artwork_title]
    theme[np.arange(A), lure] += 1.0 - representativeness
    appeal = (cfg.response.appeal_sd * rng.standard_normal(A)
              + cfg.response.clickbait_appeal * (1.0 - representativeness))

    catalog = Catalog(
        title_genres=title_genres.astype(np.float32),
        primary_genre=primary.astype(np.int32),
        popularity_prior=np.asarray(popularity, dtype=np.float32),
        launch_time=launch_time,
        pool=pool,
        pool_size=pool_size.astype(np.int32),
        artwork_title=artwork_title.astype(np.int32),
        artwork_slot=artwork_slot.astype(np.int32),
        artwork_theme=theme.astype(np.float32),
        genre_share=share,
    )
    truth = {"appeal": appeal.astype(np.float32),
             "representativeness": representativeness.astype(np.float32)}
    return catalog, truth
