"""Progress of a run over simulated time: a redrawn bar on a terminal, plain lines in a log.

A redrawn bar written to a file or a pipe (CI logs, ``nohup``, ``homesim > run.log 2>&1``)
becomes one line per redraw; there the run prints one plain line every ``every_hours``
simulated hours instead, with the rate and the ETA::

    progress:  48/336 sim-h (14%)  1,234,567 impressions  41,200 impressions/s  elapsed 0:30  ETA 3:00

Where the lines go is decided by the stream written to (``sys.stderr`` by default), since
that is the stream that would fill up with redraws.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, TextIO

#: Candidate spacings of plain progress lines, in simulated hours: the smallest that gives at
#: most :data:`MAX_LINES` lines is used, so a 1-day run reports hourly and a 2-week run daily.
LINE_SPACINGS_HOURS = (1, 2, 3, 6, 12, 24, 48, 96, 168)
MAX_LINES = 20

Update = Callable[[float, int], None]


def line_every_hours(total_hours: float) -> float:
    """Simulated hours between two plain progress lines for a run of ``total_hours``."""
    for h in LINE_SPACINGS_HOURS:
        if total_hours / h <= MAX_LINES:
            return float(h)
    return float(math.ceil(total_hours / MAX_LINES / 24.0) * 24)


def clock(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour) for a duration in seconds."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def make_progress(total_minutes: float, enabled: bool, stream: TextIO | None = None,
                  every_hours: float | None = None) -> tuple[Update | None, Callable[[], None]]:
    """``(update, close)`` for a run of ``total_minutes`` simulated minutes.

    ``update(sim_minutes, impressions)`` is called after each serving step. On a terminal it
    redraws a tqdm bar (impressions/s, ETA); elsewhere it prints a plain line each time another
    ``every_hours`` simulated hours (default :func:`line_every_hours`) have been served, and at
    the end. ``(None, no-op)`` when disabled."""
    if not enabled:
        return None, lambda: None
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        return _bar(total_minutes, stream)
    return _lines(total_minutes, stream, every_hours or line_every_hours(total_minutes / 60.0))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # closed or not a real file
        return False


def _bar(total_minutes: float, stream: TextIO):
    from tqdm import tqdm

    bar = tqdm(total=round(total_minutes / 60.0, 2), unit="sim-h", dynamic_ncols=True, mininterval=0.5,
               file=stream,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-h [{elapsed}<{remaining}{postfix}]")
    start = time.perf_counter()
    state = {"last": 0.0}

    def update(sim_minutes: float, impressions: int) -> None:
        hours = sim_minutes / 60.0
        if hours - state["last"] >= 1.0 or sim_minutes >= total_minutes:
            bar.update(hours - state["last"])
            state["last"] = hours
            rate = impressions / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{impressions:,} impressions, {rate:,.0f} impressions/s")

    return update, bar.close


def _lines(total_minutes: float, stream: TextIO, every_hours: float):
    start = time.perf_counter()
    total_hours = total_minutes / 60.0
    state = {"next": min(every_hours, total_hours), "ended": False}

    def update(sim_minutes: float, impressions: int) -> None:
        hours = sim_minutes / 60.0
        end = sim_minutes >= total_minutes
        if state["ended"] or (hours + 1e-9 < state["next"] and not end):
            return
        state["ended"] = end
        while state["next"] <= hours + 1e-9:        # one line however many marks a step crossed
            state["next"] += every_hours
        elapsed = time.perf_counter() - start
        rate = impressions / max(elapsed, 1e-9)
        done = min(hours / total_hours, 1.0) if total_hours > 0 else 1.0
        eta = elapsed * (1.0 - done) / done if done > 0 else float("nan")
        stream.write(f"progress: {hours:4.4g}/{total_hours:.4g} sim-h ({done:4.0%})  {impressions:,} impressions  "
                     f"{rate:,.0f} impressions/s  elapsed {clock(elapsed)}  ETA {clock(eta) if eta == eta else '?'}\n")
        stream.flush()

    return update, lambda: None
