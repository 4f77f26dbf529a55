"""A world drawn from MovieLens 100k (``world.source=movielens``, ``world=movielens``).

What comes from the data (943 users x 1,682 titles, 19 genres, 100,000 ratings):

* **titles**: genre mixture = the title's MovieLens genres, equal weights; popularity prior =
  (ratings + 1), scaled to mean 1; quality = mean rating shrunk toward the global mean by
  :data:`QUALITY_SHRINK_RATINGS` pseudo-ratings, standardised over the catalog (the synthetic
  world's quality is standard normal too). With ``world.n_titles`` below 1,682 the most-rated
  titles are kept.
* **member tastes**: each user's genre shares, every rated title's genre mixture weighted by its
  rating (1-5), smoothed toward the genre shares of all ratings with :data:`TASTE_PRIOR_WEIGHT`
  rating points, divided by the genre shares of all ratings (lift) and normalised
  (:func:`taste_from_shares` says why).
* **visit rates**: proportional to the user's number of ratings, scaled so that the mean is
  ``world.visits_per_day`` (``visit_rate_sigma`` is not used).
* **more members than users**: the first 943 members are the users; every further member copies
  a user drawn uniformly, with taste ``Dirichlet(world.resample_concentration * taste)`` (genre
  share s gets noise of sd ``sqrt(s (1 - s) / (c + 1))``) and the user's visit rate. Fewer
  members than users: a random subset of users, without replacement.

Not in the data, drawn as in the synthetic world from the ``world`` stream: artwork pools,
launch times (``launch_share``), countries and devices.

Where the files are found (:func:`find_movielens`): ``world.data_path`` (a GroupLens ``ml-100k``
folder with ``u.data`` and ``u.item``, a folder with RecBole's atomic files ``ml-100k.inter`` and
``ml-100k.item``, a ``recbole`` wheel or a folder holding one), else an installed ``recbole``
package, else a wheel in the download cache (:func:`cache_dir`). The data's terms forbid
redistribution: it is read at run time and never copied into the repository.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.schema import ConfigError

#: MovieLens 100k's genres, in the column order of GroupLens's ``u.item``.
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
#: Pseudo-ratings at the global mean added to every title's mean rating (shrinks rarely rated titles).
QUALITY_SHRINK_RATINGS = 10.0
#: Weight (in rating points, a rating of 5 weighs 5) of the all-ratings genre shares in a taste.
TASTE_PRIOR_WEIGHT = 5.0
WHEEL_PREFIX = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item")
GROUPLENS_FILES = ("u.data", "u.item")


def cache_dir() -> Path:
    """Where downloaded wheels are looked for: ``$HOMEPAGE_SIM_CACHE`` or ``~/.cache/homepage-sim``."""
    return Path(os.environ.get("HOMEPAGE_SIM_CACHE") or Path.home() / ".cache" / "homepage-sim")


def fetch_command() -> str:
    """The command that puts MovieLens 100k where :func:`find_movielens` looks."""
    return f"pip download --no-deps recbole -d {cache_dir()}"


class MovieLensNotFound(FileNotFoundError):
    """No MovieLens 100k files where the loader looks; the message says what to run."""


@dataclass(frozen=True)
class MovieLens:
    """Ratings and item genres, ids made dense (0-based, in the order of the raw ids).

    user, item : ndarray, shape (n_ratings,), int64
    rating : ndarray, shape (n_ratings,), float64 (1-5)
    item_genres : ndarray, shape (n_items, 19), float64, 0/1 flags in :data:`GENRES` order
    source : where it was read from (for reports)
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    item_genres: np.ndarray
    source: str

    @property
    def n_users(self) -> int:
        return int(self.user.max()) + 1

    @property
    def n_items(self) -> int:
        return int(self.item_genres.shape[0])

    def genre_mixture(self) -> np.ndarray:
        """Each item's genres with equal weights, shape (n_items, 19), rows sum to 1 (no genre:
        ``unknown``)."""
        g = self.item_genres.copy()
        g[g.sum(axis=1) == 0, 0] = 1.0
        return g / g.sum(axis=1, keepdims=True)

    def ratings_per_item(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    def ratings_per_user(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)


# ---- finding and reading the files --------------------------------------------------------------
def find_movielens(data_path: str | os.PathLike | None = None) -> str:
    """The first place holding MovieLens 100k: ``data_path``, an installed ``recbole``, the cache.

    Returns a folder (GroupLens or RecBole layout) or a wheel path. Raises
    :class:`MovieLensNotFound` saying what to run when nothing is found.
    """
    looked = []
    if data_path is not None:
        p = Path(data_path).expanduser()
        hit = _dataset_in(p)
        if hit:
            return hit
        raise MovieLensNotFound(
            f"world.data_path = {str(data_path)!r} holds no MovieLens 100k: expected a GroupLens ml-100k "
            f"folder ({', '.join(GROUPLENS_FILES)}), RecBole atomic files ({', '.join(RECBOLE_FILES)}), "
            f"a recbole-*.whl or a folder holding one. Fetch the wheel with:  {fetch_command()}")
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
        looked.append(str(folder))
        hit = _dataset_in(folder)
        if hit:
            return hit
    else:
        looked.append("an installed recbole package (none)")
    looked.append(str(cache_dir()))
    hit = _dataset_in(cache_dir())
    if hit:
        return hit
    raise MovieLensNotFound(
        "MovieLens 100k not found (looked in: " + "; ".join(looked) + "). Fetch it (a 2 MB wheel, "
        f"nothing is installed) with:  {fetch_command()}  -- or set world.data_path to a GroupLens "
        "ml-100k folder, RecBole's ml-100k atomic files or a recbole wheel.")


def _dataset_in(p: Path) -> str | None:
    if p.is_file() and p.suffix == ".whl":
        return str(p)
    if not p.is_dir():
        return None
    if all((p / f).is_file() for f in GROUPLENS_FILES) or all((p / f).is_file() for f in RECBOLE_FILES):
        return str(p)
    wheels = sorted(p.glob("recbole-*.whl"))
    return str(wheels[-1]) if wheels else None


@functools.lru_cache(maxsize=4)
def load_movielens(location: str) -> MovieLens:
    """Read MovieLens 100k from a folder (GroupLens or RecBole layout) or a recbole wheel."""
    p = Path(location)
    if p.is_file():
        with zipfile.ZipFile(p) as zf:
            try:
                inter, item = (zf.read(WHEEL_PREFIX + f) for f in RECBOLE_FILES)
            except KeyError:
                raise MovieLensNotFound(f"{p} has no {WHEEL_PREFIX}{{{','.join(RECBOLE_FILES)}}}; "
                                        f"is it a recbole wheel? Fetch one with:  {fetch_command()}") from None
        return _from_recbole(inter, item, str(p))
    if all((p / f).is_file() for f in GROUPLENS_FILES):
        return _from_grouplens((p / "u.data").read_bytes(), (p / "u.item").read_bytes(), str(p))
    return _from_recbole(*((p / f).read_bytes() for f in RECBOLE_FILES), str(p))


def _dense(ids: np.ndarray, known: np.ndarray, what: str, source: str) -> np.ndarray:
    index = np.searchsorted(known, ids)
    bad = (index >= known.size) | (known[np.minimum(index, known.size - 1)] != ids)
    if bad.any():
        raise ValueError(f"{source}: {int(bad.sum())} ratings name a {what} id not in the item file "
                         f"(first: {ids[bad][0]})")
    return index


def _assemble(user_raw, item_raw, rating, item_ids, flags, source) -> MovieLens:
    order = np.argsort(item_ids, kind="stable")
    item_ids, flags = item_ids[order], flags[order]
    _, user = np.unique(user_raw, return_inverse=True)
    item = _dense(item_raw, item_ids, "item", source)
    return MovieLens(user.astype(np.int64), item.astype(np.int64), rating.astype(np.float64),
                     flags.astype(np.float64), source)


def _from_grouplens(data: bytes, item: bytes, source: str) -> MovieLens:
    import pandas as pd

    r = pd.read_csv(io.BytesIO(data), sep="\t", header=None, names=["user", "item", "rating", "time"])
    it = pd.read_csv(io.BytesIO(item), sep="|", header=None, encoding="latin-1")
    if it.shape[1] < 5 + len(GENRES):
        raise ValueError(f"{source}/u.item has {it.shape[1]} columns, expected 24 (id|title|dates|url|19 genres)")
    flags = it.iloc[:, -len(GENRES):].to_numpy(np.float64)
    return _assemble(r["user"].to_numpy(), r["item"].to_numpy(), r["rating"].to_numpy(np.float64),
                     it.iloc[:, 0].to_numpy(), flags, source)


def _column(df, name: str, source: str):
    hit = [c for c in df.columns if str(c).split(":")[0] == name]
    if not hit:
        raise ValueError(f"{source}: no column {name!r} in RecBole file (columns: {', '.join(map(str, df.columns))})")
    return df[hit[0]]


def _from_recbole(inter: bytes, item: bytes, source: str) -> MovieLens:
    import pandas as pd

    r = pd.read_csv(io.BytesIO(inter), sep="\t")
    it = pd.read_csv(io.BytesIO(item), sep="\t", encoding="latin-1", keep_default_na=False)
    code = {g: j for j, g in enumerate(GENRES)}
    classes = _column(it, "class", source).astype(str).str.split()
    flags = np.zeros((len(it), len(GENRES)))
    for i, tokens in enumerate(classes):  # 1,682 short rows, read once per process
        for t in tokens:
            if t not in code:
                raise ValueError(f"{source}: unknown genre {t!r} (MovieLens 100k genres: {', '.join(GENRES)})")
            flags[i, code[t]] = 1.0
    return _assemble(_column(r, "user_id", source).to_numpy(), _column(r, "item_id", source).to_numpy(),
                     _column(r, "rating", source).to_numpy(np.float64),
                     _column(it, "item_id", source).to_numpy(), flags, source)


# ---- from data to a world -----------------------------------------------------------------------
def user_genre_shares(data: MovieLens, weighted: bool = True, prior_weight: float = 0.0) -> np.ndarray:
    """Each user's genre shares, shape (n_users, 19), rows sum to 1.

    ``weighted``: every rated title's genre mixture counts with its rating (else 1);
    ``prior_weight``: pseudo-weight of the all-ratings genre shares (smoothing)."""
    w = data.rating if weighted else np.ones_like(data.rating)
    mix = data.genre_mixture()
    shares = np.zeros((data.n_users, len(GENRES)))
    np.add.at(shares, data.user, w[:, None] * mix[data.item])
    shares += prior_weight * (shares.sum(axis=0) / shares.sum())
    return shares / shares.sum(axis=1, keepdims=True)


def taste_from_shares(data: MovieLens) -> np.ndarray:
    """Member tastes (n_users, 19), rows sum to 1: the user's smoothed genre shares divided by the
    genre shares of all ratings (lift), normalised.

    Why not the shares themselves: Drama is the most rated genre and the largest share of most
    users, so with shares as tastes most members' best-fitting titles are dramas, and simulated
    members play far more drama than the ratings hold. With the lift a user who rates like everyone
    has no genre preference (titles then compete on popularity and quality, which come from the
    same ratings) and a user who rates twice the usual share of horror likes horror.
    ``unknown`` (2 titles) is missing data, not a taste: its lift is 1.
    """
    shares = user_genre_shares(data, weighted=True, prior_weight=TASTE_PRIOR_WEIGHT)
    overall = _overall_shares(data)
    # A genre nobody rated (possible in a subset of the data) is neutral too.
    lift = np.divide(shares, overall, out=np.ones_like(shares), where=overall > 0)
    lift[:, GENRES.index("unknown")] = 1.0
    return lift / lift.sum(axis=1, keepdims=True)


def _overall_shares(data: MovieLens) -> np.ndarray:
    """Genre shares of all ratings, each weighted by its rating, shape (19,)."""
    total = (data.rating[:, None] * data.genre_mixture()[data.item]).sum(axis=0)
    return total / total.sum()


def kept_titles(data: MovieLens, n_titles: int) -> np.ndarray:
    """Item indices of the ``n_titles`` most-rated titles, in item order (all titles when equal)."""
    if not 1 <= n_titles <= data.n_items:
        raise ConfigError("world.n_titles", n_titles,
                          f"an integer in [1, {data.n_items}] (the titles of MovieLens 100k) "
                          "when world.source is movielens")
    by_count = np.argsort(-data.ratings_per_item(), kind="stable")
    return np.sort(by_count[:n_titles])


def movielens_data(cfg) -> MovieLens:
    """The MovieLens data of a world config (``world.data_path`` or the default places)."""
    if cfg.n_genres != len(GENRES):
        raise ConfigError("world.n_genres", cfg.n_genres,
                          f"{len(GENRES)} (the genres of MovieLens 100k) when world.source is movielens")
    return load_movielens(find_movielens(cfg.data_path))


def movielens_catalog(cfg, horizon_minutes: float, rng: np.random.Generator):
    """Catalog and hidden title truth from MovieLens (artworks and launches drawn from ``rng``).

    Returns ``(catalog, truth)`` as :func:`sim.world.catalog.build_catalog` does."""
    from sim.world.catalog import draw_artworks, draw_launch_times

    data = movielens_data(cfg)
    keep = kept_titles(data, cfg.n_titles)
    mix = data.genre_mixture()
    title_genres = mix[keep]
    counts = data.ratings_per_item()
    popularity = (counts[keep] + 1.0) / (counts[keep] + 1.0).mean()
    total = np.bincount(data.item, weights=data.rating, minlength=data.n_items)
    mu = data.rating.mean()
    shrunk = (total + QUALITY_SHRINK_RATINGS * mu) / (counts + QUALITY_SHRINK_RATINGS)
    quality = shrunk[keep]
    quality = (quality - quality.mean()) / (quality.std() or 1.0)
    genre_share = (mix[data.item]).sum(axis=0)
    genre_share /= genre_share.sum()
    launch_time = draw_launch_times(cfg, keep.size, horizon_minutes, rng)
    catalog, truth = draw_artworks(cfg, title_genres, title_genres.argmax(axis=1), popularity,
                                   launch_time, genre_share, rng)
    truth["quality"] = quality.astype(np.float32)
    return catalog, truth


def movielens_members(cfg, rng: np.random.Generator):
    """Member tastes (n_members, 19) float32 and visit rates (n_members,) per minute, and the
    user each member was drawn from (n_members,), from the ratings (module docstring)."""
    data = movielens_data(cfg)
    U, M = data.n_users, cfg.n_members
    taste = taste_from_shares(data)
    if M <= U:
        user = np.sort(rng.permutation(U)[:M]) if M < U else np.arange(U)
        tastes = taste[user]
    else:
        user = np.concatenate([np.arange(U), rng.integers(0, U, size=M - U)])
        tastes = np.empty((M, taste.shape[1]))
        tastes[:U] = taste
        for lo in range(U, M, 1 << 18):  # chunks bound the (chunk, G) gamma temporaries
            hi = min(lo + (1 << 18), M)
            g = rng.standard_gamma(cfg.resample_concentration * taste[user[lo:hi]])
            # Tiny shares can underflow to 0 in every genre at once: fall back to the user's taste.
            s = g.sum(axis=1, keepdims=True)
            tastes[lo:hi] = np.where(s > 0, g / np.where(s > 0, s, 1.0), taste[user[lo:hi]])
    activity = data.ratings_per_user()[user].astype(np.float64)
    visit_rate = cfg.visits_per_day / 1440.0 * activity / activity.mean()
    return tastes.astype(np.float32), visit_rate, user
