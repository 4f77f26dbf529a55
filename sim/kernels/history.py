"""Member histories: has each member seen a title recently?"""
from __future__ import annotations

import numpy as np

from sim.kernels import kernel


@kernel
def in_recent(recent_titles, member, title):
    """recent_titles (M, H) int: each member's ring buffer of recent titles (-1: empty);
    member, title (n,) int. Returns (n,) bool: ``title[i]`` is in ``member[i]``'s buffer
    (``(recent_titles[member] == title[:, None]).any(axis=1)`` without the (n, H) gather)."""
    n = member.shape[0]
    H = recent_titles.shape[1]
    out = np.zeros(n, np.bool_)
    for i in range(n):
        m, t = member[i], title[i]
        for h in range(H):
            if recent_titles[m, h] == t:
                out[i] = True
                break
    return out
