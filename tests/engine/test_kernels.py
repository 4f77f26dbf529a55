"""The compiled kernels (sim/kernels/): each against the plain NumPy it replaced, bit for bit,
and every kernel cached on disk so a process compiles it at most once."""
from __future__ import annotations

import importlib
import pkgutil

import numpy as np
from numba.core.dispatcher import Dispatcher

import sim.kernels
from sim.homepage import GenreIndex, layout_pages
from sim.kernels.accumulate import accumulate, count_visits
from sim.metrics.accumulator import scatter_add_rows
from sim.streams import generator


def test_every_kernel_is_cached_on_disk():
    found = []
    for info in pkgutil.iter_modules(sim.kernels.__path__):
        module = importlib.import_module(f"sim.kernels.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, Dispatcher) and obj.__module__ == module.__name__:
                found.append(name)
                assert type(obj._cache).__name__ == "FunctionCache", f"{info.name}.{name} is not cache=True"
    assert {"layout_kernel", "scan_sessions", "accumulate", "count_visits", "scatter_add", "best_candidates", "argmax_counts"} <= set(found)


def test_accumulate_matches_add_at_and_bincount_bit_for_bit():
    rng = generator(3, "test-kernels")
    n, members, buckets, cells, width = 5_000, 40, 7, 3, 6
    rows = rng.integers(0, members, n)                  # many repeats: order of adds matters
    bucket = rng.integers(0, buckets, n)
    values = rng.standard_normal((n, width)) * 10.0 ** rng.integers(-8, 8, (n, width))
    member_src, member_dst = np.array([0, 2, 5]), np.array([1, 0, 2])
    series_src, series_dst = np.arange(width), np.array([5, 4, 3, 2, 1, 0])
    per_member, series = rng.standard_normal((members, 3)), rng.standard_normal((buckets, cells, width))
    want_pm, want_series = per_member.copy(), series.copy()
    for k in range(member_src.size):
        np.add.at(want_pm[:, member_dst[k]], rows, values[:, member_src[k]])
    for k in range(width):
        want_series[:, 1, series_dst[k]] += np.bincount(bucket, weights=values[:, series_src[k]], minlength=buckets)
    accumulate(per_member, series, 1, rows, bucket, values, member_src, member_dst, series_src, series_dst)
    np.testing.assert_array_equal(per_member, want_pm)
    np.testing.assert_array_equal(series, want_series)
    # Negative control: the same sums in another order differ in the last bits.
    shuffled = np.random.default_rng(0).permutation(n)
    other = np.zeros((members, 3))
    accumulate(other, np.zeros_like(series), 1, rows[shuffled], bucket[shuffled], values[shuffled],
               member_src, member_dst, series_src, series_dst)
    fresh = np.zeros((members, 3))
    accumulate(fresh, np.zeros_like(series), 1, rows, bucket, values, member_src, member_dst, series_src, series_dst)
    assert not np.array_equal(other, fresh)


def test_count_visits_and_scatter_add_rows_match_add_at():
    rng = generator(4, "test-kernels")
    rows, bucket, cell = rng.integers(0, 9, 300), rng.integers(0, 4, 300), rng.integers(0, 2, 300)
    per_member, series = np.zeros((9, 3)), np.zeros((4, 2, 5))
    count_visits(per_member, series, 2, 4, rows, bucket, cell)
    assert np.array_equal(per_member[:, 2], np.bincount(rows, minlength=9))
    want = np.zeros((4, 2))
    np.add.at(want, (bucket, cell), 1.0)
    assert np.array_equal(series[:, :, 4], want) and per_member[:, :2].sum() == 0
    target = rng.random((9, 4), dtype=np.float32)
    values = rng.random((300, 3), dtype=np.float32)
    want = target.copy()
    np.add.at(want, (rows[:, None], np.arange(3)[None, :]), values)
    scatter_add_rows(target, rows, values)
    np.testing.assert_array_equal(target, want)


def test_layout_ties_rank_the_earlier_title_first():
    # Four titles of one genre with equal scores, two columns: the top row takes titles 0 and 1
    # (earliest in genre order), the genre row the next two; genre ties go to the lower genre.
    index = GenreIndex(type("C", (), {"primary_genre": np.array([0, 0, 0, 0, 1]), "n_genres": 2})())
    scores = np.array([[1.0, 1.0, 1.0, 1.0, 0.5]])
    titles, row_genre = layout_pages(scores, np.array([[0.3, 0.3]]), np.ones(5, bool), index, 3, 2)
    assert titles[0].tolist() == [[0, 1], [2, 3], [4, -1]]
    assert row_genre[0].tolist() == [-1, 0, 1]


def test_best_candidates_matches_numpy_argmax_with_ties_padding_and_nan():
    """The sampled-posterior policies' argmax, against the NumPy it replaced."""
    from sim.kernels.choice import best_candidates

    rng = generator(5, "test-kernels")
    D, n, K, A = 6, 400, 7, 30
    # Scores on a coarse grid, so that many sums tie exactly (argmax keeps the first maximum).
    scores = (rng.integers(-4, 5, (D, n, K)) / 4).astype(np.float32)
    table = (rng.integers(-4, 5, (D, A + 1)) / 4).astype(np.float32)
    table[:, -1] = -np.inf                                  # the padding column
    candidates = rng.integers(0, A, (n, K)).astype(np.int32)
    candidates[rng.random((n, K)) < 0.3] = -1               # padding anywhere in a row
    candidates[:5] = -1                                     # rows of padding only: index 0
    scores[1, 10:20, 3] = np.nan                            # NaN wins at its first position
    scores[2, 30, 0] = np.nan
    want = (scores + np.take(table, candidates, axis=1)).argmax(axis=2).T
    got = best_candidates(scores, table, candidates)
    np.testing.assert_array_equal(got, want)
    assert (got[:5] == 0).all() and (got[10:20, 1] == 3).all() and got[30, 2] == 0
    # Negative control: a strict '>=' (the last maximum) would differ on the ties.
    last = (K - 1) - (scores + np.take(table, candidates, axis=1))[..., ::-1].argmax(axis=2).T
    assert not np.array_equal(got, last)
    # Wider types (an OPE batch's int64 ids, float64 scores) give NumPy's answer too.
    np.testing.assert_array_equal(best_candidates(scores.astype(np.float64), table.astype(np.float64),
                                                  candidates.astype(np.int64)), want)


def test_argmax_counts_matches_numpy_argmax_and_bincount():
    """Thompson sampling's deploy-time win counts, against the NumPy it replaced, on draws
    that tie often (a coarse grid), with padding (-1 and -inf) and NaN."""
    from sim.kernels.choice import argmax_counts

    rng = generator(6, "test-kernels")
    m, K, D = 50, 9, 64
    draws = rng.integers(0, 4, (m, K, D)) / 4.0
    draws[rng.random((m, K)) < 0.3] = -1.0                  # padded candidates, every draw
    draws[:3] = -np.inf                                     # titles of padding only: index 0
    draws[5, 4, :10] = np.nan                               # NaN wins at its first position
    draws[6, 0, 7] = np.nan

    def numpy_counts(x):
        winner = x.argmax(axis=1)
        flat = (np.arange(x.shape[0])[:, None] * K + winner).ravel()
        return np.bincount(flat, minlength=x.shape[0] * K).reshape(x.shape[0], K)

    got = argmax_counts(draws)
    np.testing.assert_array_equal(got, numpy_counts(draws))
    assert (got.sum(axis=1) == D).all() and (got[:3, 0] == D).all()
    # Negative control: the last maximum instead of the first differs on the ties.
    last = numpy_counts(draws[:, ::-1])[:, ::-1]
    assert not np.array_equal(got, last)
