"""The session scan: each member looks at the tiles of a page in reading order until a quality
play, a leave, the end of their patience or the end of the rendered tiles
(:class:`sim.world.session.SessionResponse`).

The caller draws every random number and computes what each tile would do if looked at; the
scan decides which tiles are looked at and times the session. Clock sums run as the NumPy code
did (a running sum over the batch, minus its value at the session's start), so results are
bit-identical to it.
"""
from __future__ import annotations

import numpy as np

from sim.kernels import kernel

#: ``end_reason`` codes (index into :data:`sim.world.response.SESSION_END_REASONS`).
END_PLAY, END_LEAVE, END_PATIENCE, END_PAGE = 0, 1, 2, 3


@kernel
def scan_sessions(starts, browse, watch, dwell, detail, opened, played, quality, leave, patience):
    """Scan n tiles grouped in sessions (tiles in reading order, session s = tiles
    ``starts[s]:starts[s + 1]``).

    browse, watch (n,) float64 seconds a look (+ detail view) spends of the patience, and the
    watch time of an abandoned play; dwell, detail (n,) float32; opened, played, quality,
    leave (n,) bool: what the tile would do if looked at; patience (sessions,) float64.

    Returns looked, click, play, quality_play (n,) bool; look_second, click_second,
    play_second (n,) float32 (NaN: did not happen); click_delay, play_delay (n,) float32
    minutes; session_seconds (n,) float32 and end_reason (n,) int8, the same on every tile of
    a session."""
    n = browse.shape[0]
    S = starts.shape[0]
    looked = np.zeros(n, np.bool_)
    click = np.zeros(n, np.bool_)
    play = np.zeros(n, np.bool_)
    quality_play = np.zeros(n, np.bool_)
    look_second = np.full(n, np.nan, np.float32)
    click_second = np.full(n, np.nan, np.float32)
    play_second = np.full(n, np.nan, np.float32)
    click_delay = np.zeros(n, np.float32)
    play_delay = np.zeros(n, np.float32)
    session_seconds = np.empty(n, np.float32)
    end_reason = np.empty(n, np.int8)
    clock = np.empty(n)
    total_browse = 0.0
    total_watch = 0.0
    for s in range(S):
        lo = starts[s]
        hi = starts[s + 1] if s + 1 < S else n
        base_browse = 0.0
        base_watch = 0.0
        stop = n
        last = -1
        for i in range(lo, hi):
            # Exclusive sums as running total minus the tile, minus the session's first such value.
            total_browse += browse[i]
            total_watch += watch[i]
            before_browse = total_browse - browse[i]
            before_watch = total_watch - watch[i]
            if i == lo:
                base_browse = before_browse
                base_watch = before_watch
            browse_before = before_browse - base_browse
            clock[i] = browse_before + (before_watch - base_watch)
            if stop < n or not (browse_before < patience[s]):
                continue    # later tiles: only the running sums move on
            looked[i] = True
            last = i
            if quality[i] or leave[i]:
                stop = i
        if stop < n:
            reason = END_PLAY if quality[stop] else END_LEAVE
        else:
            reason = END_PATIENCE if last < hi - 1 else END_PAGE
        for i in range(lo, hi):
            if looked[i]:
                opened_at = clock[i] + dwell[i]
                look_second[i] = clock[i]
                if opened[i]:
                    click[i] = True
                    click_second[i] = opened_at
                    click_delay[i] = opened_at / 60.0
                if played[i]:
                    play[i] = True
                    play_second[i] = opened_at + detail[i]
                    play_delay[i] = detail[i] / 60.0
                quality_play[i] = quality[i]
        if reason == END_PLAY:
            length = clock[stop] + dwell[stop] + detail[stop]
        else:
            lt = max(last, 0)     # a session always looks at its first tile (patience > 0)
            length = clock[lt] + browse[lt] + watch[lt]
        for i in range(lo, hi):
            session_seconds[i] = length
            end_reason[i] = reason
    return (looked, click, play, quality_play, look_second, click_second, play_second,
            click_delay, play_delay, session_seconds, end_reason)
