"""Compile (or load from the on-disk cache) every kernel once, on tiny inputs, and time it.

``python -m sim.kernels.warm`` prints the seconds; the benchmark reports them apart from the
simulation's own time. A process pays this once: numba caches machine code under
``sim/kernels/__pycache__``, so later processes only load it.
"""
from __future__ import annotations

import time

import numpy as np


def warm() -> float:
    """Call every kernel once with the argument types serving uses; seconds taken."""
    t0 = time.perf_counter()
    from sim.kernels.accumulate import accumulate, count_visits, scatter_add
    from sim.kernels.choice import argmax_counts, best_candidates, inverse_cdf
    from sim.kernels.history import in_recent
    from sim.kernels.layout import layout_kernel
    from sim.kernels.session import scan_sessions

    i64 = np.zeros(1, np.int64)
    layout_kernel(np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32),
                  np.arange(2), np.array([0, 2]), 2, 1)
    f64, f32, b = np.zeros(1), np.zeros(1, np.float32), np.zeros(1, np.bool_)
    scan_sessions(i64, f64, f64, f32, f32, b, b, b, b, np.ones(1))
    per_member, series = np.zeros((1, 2)), np.zeros((1, 1, 2))
    accumulate(per_member, series, 0, i64, i64, np.zeros((1, 2)), np.arange(2), np.arange(2),
               np.arange(2), np.arange(2))
    count_visits(per_member, series, 0, 0, i64, i64, i64)
    scatter_add(np.zeros((1, 2), np.float32), i64, np.zeros((1, 2), np.float32))
    scatter_add(per_member, i64, np.zeros((1, 2)))
    best_candidates(np.zeros((1, 1, 2), np.float32), np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int32))
    argmax_counts(np.zeros((2, 3)), np.ones((1, 2), np.bool_))
    inverse_cdf(np.ones((1, 2)), np.zeros(1))
    in_recent(np.full((1, 2), -1, np.int32), i64, np.zeros(1, np.int32))
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"kernels ready in {warm():.2f} s (import, then compile or load from cache)")
