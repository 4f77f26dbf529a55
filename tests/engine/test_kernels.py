"""The compiled kernels (sim/kernels/): each against the plain NumPy it replaced, bit for bit,
and every kernel cached on disk so a process compiles it at most once."""
from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
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
    assert {"layout_kernel", "scan_sessions", "accumulate", "count_visits", "scatter_add", "best_candidates", "argmax_counts", "inverse_cdf", "in_recent"} <= set(found)


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
    """Thompson sampling's deploy-time win counts, against the NumPy it replaced (the draws
    placed in a padded (m, K, D) array, argmax over candidates, bincount), on draws that tie
    often (a coarse grid), with padding anywhere in a row, titles without candidates and NaN."""
    from sim.kernels.choice import argmax_counts

    rng = generator(6, "test-kernels")
    m, K, D = 50, 9, 64
    valid = rng.random((m, K)) < 0.7
    valid[:3] = False                                       # titles without candidates: index 0
    draws = rng.integers(0, 4, (int(valid.sum()), D)) / 4.0
    draws[7, :10] = np.nan                                  # NaN wins at its first position
    draws[20, 5] = np.nan

    def numpy_counts(draws, valid, pad):
        x = np.full((m, K, D), pad)
        x[valid] = draws
        winner = x.argmax(axis=1)
        flat = (np.arange(m)[:, None] * K + winner).ravel()
        return np.bincount(flat, minlength=m * K).reshape(m, K)

    got = argmax_counts(draws, valid)
    for pad in (-1.0, -np.inf):                             # the two paddings the policy used
        np.testing.assert_array_equal(got, numpy_counts(draws, valid, pad))
    assert (got.sum(axis=1) == D).all() and (got[:3, 0] == D).all() and not got[3:][~valid[3:]].any()
    # Negative control: the last maximum instead of the first differs on the ties.
    # (Candidates and titles in reverse order: the first maximum found is the last one.)
    last = numpy_counts(draws[::-1], valid[::-1, ::-1], -1.0)[::-1, ::-1]
    assert not np.array_equal(got, last)


def test_inverse_cdf_matches_the_numpy_sampler_it_replaced():
    """``sample_rows``'s kernel against the NumPy code it replaced, bit for bit: float64 and
    float32 rows, zero-probability columns anywhere (the round-off guard), rows of zeros and
    NaN, and uniforms at the edges of every column."""
    from sim.kernels.choice import inverse_cdf

    def numpy_sampler(probs, r):
        cdf = np.cumsum(probs, axis=1)
        u = r * cdf[:, -1]
        idx = np.minimum((cdf <= u[:, None]).sum(axis=1), probs.shape[1] - 1)
        bad = probs[np.arange(probs.shape[0]), idx] <= 0
        idx[bad] = probs.shape[1] - 1 - np.argmax(probs[bad][:, ::-1] > 0, axis=1)
        return idx

    rng = generator(7, "test-kernels")
    n, K = 4_000, 7
    for dtype in (np.float64, np.float32):
        probs = rng.dirichlet(np.full(K, 0.5), n).astype(dtype)
        probs[rng.random((n, K)) < 0.3] = 0.0                  # zero columns anywhere, trailing too
        probs[:5] = 0.0                                        # rows of zeros: the last column
        probs[5, 2] = np.nan
        r = rng.random(n)
        r[10:20] = 0.0
        r[20:30] = np.nextafter(1.0, 0.0)                      # u just below the total
        r[30:40], probs[30:40, -1] = 1.0, 0.0                  # u at the total: the guard's case
        got = inverse_cdf(probs, r)
        np.testing.assert_array_equal(got, numpy_sampler(probs, r))
        assert (got[:5] == K - 1).all()
        ok = ~np.isnan(probs).any(axis=1) & (probs.sum(axis=1) > 0)
        assert (probs[ok][np.arange(ok.sum()), got[ok]] > 0).all()    # never a zero column
    # Negative control: without the guard, the rows whose uniform is at the total land on
    # their last column, which has probability 0.
    cdf = np.cumsum(probs, axis=1)
    unguarded = np.minimum((cdf <= (r * cdf[:, -1])[:, None]).sum(axis=1), K - 1)
    assert (probs[np.arange(n), unguarded][ok] <= 0).any()


def test_in_recent_matches_the_numpy_lookup():
    """Members' recent-title lookups against the gather-and-compare they replaced: partly
    filled buffers (-1), repeated members, titles seen and not seen."""
    from sim.kernels.history import in_recent

    rng = generator(8, "test-kernels")
    M, H, T, n = 300, 6, 12, 5_000
    recent = rng.integers(0, T, (M, H)).astype(np.int32)
    recent[rng.random((M, H)) < 0.4] = -1
    member, title = rng.integers(0, M, n), rng.integers(0, T, n).astype(np.int32)
    want = (recent[member] == title[:, None]).any(axis=1)
    got = in_recent(recent, member, title)
    np.testing.assert_array_equal(got, want)
    assert 0.1 < got.mean() < 0.9                               # both answers occur
    assert not in_recent(recent, member, np.full(n, -2, np.int32)).any()


def test_callers_of_unchecked_kernels_refuse_shapes_they_would_overrun():
    """``inverse_cdf`` and ``in_recent`` do not check bounds; their callers refuse what would
    read or write past an array (NumPy raised IndexError there before)."""
    from sim.policies.base import sample_rows
    from sim.world.members import Members

    rng = generator(9, "test-kernels")
    with pytest.raises(ValueError, match="K >= 1"):
        sample_rows(np.zeros((3, 0)), rng)
    with pytest.raises(ValueError, match=r"shape \(n, K\)"):
        sample_rows(np.ones(3), rng)
    members = Members.__new__(Members)
    members.recent_titles = np.full((4, 2), -1, np.int32)
    with pytest.raises(ValueError, match="one length"):
        members.has_interacted(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(IndexError, match=r"member ids must be in \[0, 4\)"):
        members.has_interacted(np.array([0, 4]), np.array([0, 1]))
    with pytest.raises(IndexError, match=r"member ids must be in \[0, 4\)"):
        members.has_interacted(np.array([-1]), np.array([0]))
