"""What each member was shown: the artwork currently shown for a title, and since when.

Observable (the service knows what it rendered). Used by the ``sticky`` policy wrapper (keep a
member's image for a title for a minimum time, as Netflix does for recognisability and clean
attribution) and by the response model's recognisability penalty (a title whose image changed
is harder to recognise). A per-member ring buffer of the most recently shown distinct titles:
memory is ``n_members x size``, never the full member x title matrix.
"""
from __future__ import annotations

import numpy as np

from sim.world.members import ring_append_slots


class ShownArtworks:
    """Per member, up to ``size`` titles with the artwork last shown and the minute it was first
    shown (``since``: showing the same image again does not reset it). Covers members
    ``offset .. offset + n_members`` (a shard's member blocks)."""

    def __init__(self, n_members: int, size: int = 64, offset: int = 0):
        self.offset = int(offset)
        self.title = np.full((n_members, size), -1, dtype=np.int32)
        self.artwork = np.full((n_members, size), -1, dtype=np.int32)
        self.since = np.zeros((n_members, size), dtype=np.float64)
        self.cursor = np.zeros(n_members, dtype=np.int64)

    def lookup(self, member: np.ndarray, title: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Last shown artwork of ``title[i]`` to ``member[i]`` (-1 if none) and since when, (n,)."""
        member = member - self.offset
        match = self.title[member] == title[:, None]                         # (n, size)
        found = match.any(axis=1)
        slot = match.argmax(axis=1)
        artwork = np.where(found, self.artwork[member, slot], -1)
        since = np.where(found, self.since[member, slot], np.inf)
        return artwork, since

    def record(self, member: np.ndarray, title: np.ndarray, artwork: np.ndarray,
               time: np.ndarray) -> None:
        """Remember impressions (n,); a title already remembered is updated in place."""
        if member.size == 0:
            return
        member = member - self.offset
        match = self.title[member] == title[:, None]
        found = match.any(axis=1)
        slot = match.argmax(axis=1)
        # Known title: a new image restarts its clock, the same image keeps it.
        m, s = member[found], slot[found]
        changed = self.artwork[m, s] != artwork[found]
        self.since[m[changed], s[changed]] = time[found][changed]
        self.artwork[m, s] = artwork[found]
        new = ~found
        if new.any():
            order = np.argsort(member[new], kind="stable")
            mem = member[new][order]
            keep, ring = ring_append_slots(mem, self.cursor, self.title.shape[1])
            mem, ring = mem[keep], ring[keep]
            self.title[mem, ring] = title[new][order][keep]
            self.artwork[mem, ring] = artwork[new][order][keep]
            self.since[mem, ring] = time[new][order][keep]
