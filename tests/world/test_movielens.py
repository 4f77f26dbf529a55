"""world=movielens: loading MovieLens 100k in both layouts (GroupLens folder, RecBole atomic
files, a recbole wheel), building the world from it, resampling noise, and the error that says
what to run when the data is missing.

Small generated files stand in for the data (its terms forbid committing it); one test reads the
real recbole wheel when it can be fetched, and skips with the reason otherwise.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.config import ConfigError, WorldConfig, experiment_config_from_dict
from sim.world import build_world
from sim.world.movielens import (GENRES, QUALITY_SHRINK_RATINGS, TASTE_PRIOR_WEIGHT, MovieLensNotFound,
                                 find_movielens, load_movielens, movielens_members)
from tests.conftest import REPO

# 4 users, 12 titles. Raw ids are not dense (users 10, 20, 30, 40) to check the re-indexing.
USERS = [10, 20, 30, 40]
N_ITEMS = 12
#: item (1-based) -> genre names
ITEM_GENRES = {i: ([GENRES[1 + i % 18]] if i % 3 else [GENRES[1 + i % 18], "Drama"]) for i in range(1, N_ITEMS + 1)}
#: (user, item, rating): user 10 rates items 1-12, the others fewer
RATINGS = ([(10, i, 1 + i % 5) for i in range(1, 13)] + [(20, i, 5) for i in (1, 2, 3)]
           + [(30, i, 3) for i in (1, 4, 7, 10, 12)] + [(40, 1, 4), (40, 2, 2)])


def write_grouplens(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t88125{k:04d}\n" for k, (u, i, r) in enumerate(RATINGS)))
    lines = []
    for i, gs in ITEM_GENRES.items():
        flags = "|".join("1" if g in gs else "0" for g in GENRES)
        lines.append(f"{i}|Title {i} (1995)|01-Jan-1995||http://x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return folder


def recbole_texts() -> tuple[str, str]:
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t88125{k:04d}\n" for k, (u, i, r) in enumerate(RATINGS))
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tTitle {i}\t1995\t{' '.join(gs)}\n" for i, gs in ITEM_GENRES.items())
    return inter, item


def write_recbole(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    inter, item = recbole_texts()
    (folder / "ml-100k.inter").write_text(inter)
    (folder / "ml-100k.item").write_text(item)
    return folder


def write_wheel(path: Path) -> Path:
    inter, item = recbole_texts()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.item", item)
    return path


def world_cfg(path, **over) -> WorldConfig:
    return WorldConfig.from_dict({"source": "movielens", "data_path": str(path), "n_members": len(USERS),
                                  "n_titles": N_ITEMS, "n_genres": len(GENRES), "launch_share": 0.0, **over})


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    return {"grouplens": write_grouplens(root / "gl"), "recbole": write_recbole(root / "rb"),
            "wheel": write_wheel(root / "recbole-9.9-py3-none-any.whl")}


def test_every_layout_reads_the_same_ratings(layouts):
    data = {k: load_movielens(find_movielens(p)) for k, p in layouts.items()}
    for d in data.values():
        assert (d.n_users, d.n_items, d.user.size) == (4, 12, len(RATINGS))
        assert d.ratings_per_user().tolist() == [12, 3, 5, 2]          # users 10, 20, 30, 40
        assert d.ratings_per_item()[0] == 4                            # item 1: users 10, 20, 30, 40
        assert d.item_genres[0].tolist() == [float(g in ITEM_GENRES[1]) for g in GENRES]
        np.testing.assert_array_equal(d.rating, data["grouplens"].rating)
        np.testing.assert_array_equal(d.item_genres, data["grouplens"].item_genres)


def test_folder_holding_a_wheel_is_found(layouts, tmp_path):
    (tmp_path / layouts["wheel"].name).write_bytes(layouts["wheel"].read_bytes())
    assert find_movielens(tmp_path).endswith(".whl")


def test_world_from_data(layouts):
    w = build_world(world_cfg(layouts["recbole"]), seed=3, horizon_minutes=1440.0)
    c = w.catalog
    assert (c.n_titles, c.n_genres, w.members.n_members) == (12, 19, 4)
    # Title 3 (item 3) is Children's + Drama: equal weights.
    assert c.title_genres[2, GENRES.index("Drama")] == pytest.approx(0.5)
    # Popularity: (ratings + 1) / mean; item 1 has 4 ratings, item 5 one.
    counts = np.array([4, 3, 2, 2, 1, 1, 2, 1, 1, 2, 1, 2])
    np.testing.assert_allclose(c.popularity_prior, (counts + 1) / (counts + 1).mean(), rtol=1e-6)
    # Quality: shrunk mean rating, standardised. Item 2: ratings 3, 5, 2; item 5: rating 1.
    mu = np.mean([r for _, _, r in RATINGS])
    shrunk = lambda rs: (sum(rs) + QUALITY_SHRINK_RATINGS * mu) / (len(rs) + QUALITY_SHRINK_RATINGS)  # noqa: E731
    q = w.response.quality
    assert (q[1] - q[4]) / (q[1] - q[0]) == pytest.approx(
        (shrunk([3, 5, 2]) - shrunk([1])) / (shrunk([3, 5, 2]) - shrunk([2, 5, 3, 4])), rel=1e-4)
    # Visit rates proportional to ratings per user (12, 3, 5, 2), mean = visits_per_day.
    rate = w.members.visit_rate
    np.testing.assert_allclose(rate / rate[3], [6, 1.5, 2.5, 1], rtol=1e-9)
    assert rate.mean() * 1440 == pytest.approx(0.6)
    # User 40's taste: rating-weighted genre shares (item 1: 4, item 2: 2) smoothed by the prior,
    # divided by the shares of all ratings (genres nobody rated: 1), normalised.
    mix = np.array([[float(g in ITEM_GENRES[i]) for g in GENRES] for i in range(1, 13)])
    mix /= mix.sum(axis=1, keepdims=True)
    weighted = np.zeros(19)
    for u, i, r in RATINGS:
        weighted += r * mix[i - 1]
    prior = weighted / weighted.sum()
    own = 4 * mix[0] + 2 * mix[1]
    shares = (own + TASTE_PRIOR_WEIGHT * prior) / (6 + TASTE_PRIOR_WEIGHT)
    lift = np.ones(19)
    lift[prior > 0] = shares[prior > 0] / prior[prior > 0]
    np.testing.assert_allclose(w.response.tastes[3], lift / lift.sum(), rtol=1e-5)


def test_same_seed_same_world_other_seed_other_artworks(layouts):
    a, b = (build_world(world_cfg(layouts["grouplens"]), s, 1440.0) for s in (5, 5))
    c = build_world(world_cfg(layouts["grouplens"]), 6, 1440.0)
    np.testing.assert_array_equal(a.catalog.artwork_theme, b.catalog.artwork_theme)
    np.testing.assert_array_equal(a.response.tastes, b.response.tastes)
    assert not np.array_equal(a.catalog.pool_size, c.catalog.pool_size)
    np.testing.assert_array_equal(a.catalog.title_genres, c.catalog.title_genres)   # from the data


def test_fewer_titles_keeps_the_most_rated(layouts):
    w = build_world(world_cfg(layouts["grouplens"], n_titles=2), 0, 1440.0)
    # Items 1 (4 ratings) and 2 (3 ratings), in item order.
    assert w.catalog.title_genres[1, GENRES.index(ITEM_GENRES[2][0])] == pytest.approx(1.0)


@pytest.mark.parametrize("key,value,allowed", [("n_titles", 13, "[1, 12]"), ("n_genres", 16, "19")])
def test_sizes_the_data_cannot_give_are_refused(layouts, key, value, allowed):
    with pytest.raises(ConfigError, match=rf"world\.{key} = {value} is not allowed: .*{allowed}"):
        build_world(world_cfg(layouts["grouplens"], **{key: value}), 0, 1440.0)


def test_resampled_members_copy_a_user_with_the_documented_noise(layouts):
    """Members beyond the users: taste ~ Dirichlet(c * taste of a random user). Per genre,
    Var(taste' - taste) = s (1 - s) / (c + 1); the pooled ratio must be 1 within its SE."""
    for c in (20.0, 500.0):
        cfg = world_cfg(layouts["grouplens"], n_members=4004, resample_concentration=c)
        tastes, rate, user = movielens_members(cfg, np.random.default_rng(0))
        base, _, _ = movielens_members(world_cfg(layouts["grouplens"]), np.random.default_rng(0))
        assert np.array_equal(user[:4], np.arange(4)) and np.array_equal(tastes[:4], base)
        s = base[user[4:]].astype(float)
        ok = s > 0.02                       # genres with some share (the others are ~0 on both sides)
        r = (tastes[4:][ok] - s[ok]) ** 2 / (s[ok] * (1 - s[ok]) / (c + 1))
        assert abs(r.mean() - 1) < 4 * r.std() / np.sqrt(r.size), (c, r.mean())
        assert np.allclose(rate[4:], rate[user[4:]])


def test_missing_data_says_what_to_run(tmp_path, monkeypatch):
    if importlib.util.find_spec("recbole") is not None:
        pytest.skip("recbole is installed here, so the data is always found")
    monkeypatch.setenv("HOMEPAGE_SIM_CACHE", str(tmp_path / "empty"))
    cfg = WorldConfig.from_dict({"source": "movielens", "n_genres": 19, "n_titles": 10, "n_members": 5})
    with pytest.raises(MovieLensNotFound, match=r"pip download --no-deps recbole -d .*empty"):
        build_world(cfg, 0, 1440.0)
    with pytest.raises(MovieLensNotFound, match=r"world.data_path = .*nowhere.* pip download --no-deps recbole"):
        find_movielens(tmp_path / "nowhere")


def test_world_movielens_config_is_valid_and_runs_on_given_files(layouts, tmp_path):
    """configs/world/movielens.yaml passes validation; a short run of the engine on a world drawn
    from (generated) data goes through the unchanged engine."""
    from sim.logs import read_impressions
    from sim.runner import run_experiment

    world = yaml.safe_load((REPO / "configs/world/movielens.yaml").read_text())
    assert (world["source"], world["n_titles"], world["n_genres"], world["n_members"]) == ("movielens", 1682, 19, 943)
    experiment_config_from_dict({"world": world})
    world.update(data_path=str(layouts["wheel"]), n_titles=12, n_members=4, visits_per_day=200.0)
    run_experiment({"seed": 0, "world": world, "engine": {"days": 0.1, "progress": False},
                    "ranker": {"name": "learned", "rows": 2, "columns": 4},
                    "experiment": {"name": "ml"}}, tmp_path / "run")
    log = read_impressions(tmp_path / "run", columns=["member", "title"])
    assert len(log) > 0 and log["title"].max() < 12 and log["member"].max() < 4


def _real_wheel() -> Path:
    """The real recbole wheel, downloaded once into a temporary cache (never the repository)."""
    cache = Path(os.environ.get("HOMEPAGE_SIM_TEST_CACHE", Path(tempfile.gettempdir()) / "homepage-sim-cache"))
    wheels = sorted(cache.glob("recbole-*.whl"))
    if not wheels:
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "recbole", "-d", str(cache)],
                           capture_output=True, timeout=90, check=True)
        except (subprocess.SubprocessError, OSError) as err:
            pytest.skip(f"the recbole wheel could not be fetched ({type(err).__name__}): no network or index")
        wheels = sorted(cache.glob("recbole-*.whl"))
    if not wheels:
        pytest.skip("pip download ran but left no recbole wheel")
    return wheels[-1]


def test_real_movielens_100k_from_the_recbole_wheel():
    data = load_movielens(str(_real_wheel()))
    # The published size of MovieLens 100k: 943 users, 1,682 movies, 100,000 ratings, each user >= 20.
    assert (data.n_users, data.n_items, data.user.size) == (943, 1682, 100_000)
    assert data.ratings_per_user().min() == 20
    assert set(np.unique(data.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.item_genres[:, GENRES.index("Drama")].sum() == 725     # Drama titles in u.item


def test_world_movielens_composes_with_hydra():
    """``world=movielens`` on the command line: the data-driven source, the default session model."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import experiments.config_store  # noqa: F401  (registers the schema)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["world=movielens", "world.n_members=2000"])
    exp = experiment_config_from_dict(OmegaConf.to_container(cfg, resolve=True))
    assert (exp.world.source, exp.world.n_titles, exp.world.n_members) == ("movielens", 1682, 2000)
    assert exp.world.response.name == "session" and exp.world.data_path is None
