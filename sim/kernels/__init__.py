"""Compiled kernels of the hot path (numba), one implementation of each.

Every kernel is ``@njit(cache=True)``: compiled on first call and cached on disk (under
``__pycache__``), so a new process loads machine code instead of compiling. Kernels draw no
random numbers: callers draw uniforms from the passed-in NumPy generators and hand them in, so
runs stay deterministic and independent of the shard count. Float sums run in the order the
NumPy code they replaced used, so results stay bit-identical.

* :mod:`sim.kernels.layout` -- the homepage grid (top picks, genre rows) per visit
* :mod:`sim.kernels.session` -- the session scan over a page (reading order, patience, stops)
* :mod:`sim.kernels.accumulate` -- per-member and per-(time bucket) metric sums
* :mod:`sim.kernels.choice` -- the best candidate under each posterior draw (sampled-posterior
  policies), and how often each candidate wins (Thompson sampling's deploy)
* :mod:`sim.kernels.history` -- has a member seen a title recently (the ring buffer of recent titles)
* :mod:`sim.kernels.warm` -- compile (or load) every kernel once, timed
"""
from __future__ import annotations

from numba import njit

#: The decorator every kernel uses: compiled once, cached on disk, no Python objects inside.
kernel = njit(cache=True, nogil=True, boundscheck=False)
