"""The ``session`` response model: one member visit is one session over the whole page.

Gomez-Uribe & Hunt ("The Netflix Recommender System", ACM TMIS 2015): a member reviews 10-20
titles on one or two screens, perhaps 3 in detail, and within 60-90 seconds either picks
something or leaves. Here, per visit (``world.response.name=session``):

1. **Scan.** The member looks at the rendered tiles in reading order: rows top-down, columns left
   to right. Rendering already keeps only the rows the member scrolls to (row continuation
   probability ``session_scroll_continue``) and the columns their device shows, so the scan covers those
   tiles until the session ends. Each look takes a dwell time (``dwell_seconds``).
2. **Detail view.** A looked-at tile is opened (the *click*) with ``sigmoid(click logit)``: the
   independent model's logit (fit, title quality, theme match x taste + appeal, shrunk for
   familiar titles, minus the change penalty) without its position attention, with this
   model's intercept. A detail view takes ``detail_seconds``.
3. **Play.** A detail view leads to a play with ``sigmoid(play logit)`` (fit,
   representativeness) or back to browsing. A play is a *quality play* (watched past the
   threshold) with the independent model's quality logit; a play that is not abandoned early
   (a quality play) ends the session, so there is at most one quality play per session. An
   abandoned play lasts its watch minutes, then the member browses on.
4. **Leave.** After each look the member leaves with ``leave_probability``; the session also ends
   when the browsing time (looks and detail views, not watching) exceeds the member's patience,
   a log-normal time budget per session (``patience_seconds`` median, ``patience_sigma``), or
   when the rendered tiles run out (the member stopped scrolling).

Tiles compete: a tile opened and played early ends the session, and every look spends patience,
so an attractive image early in reading order lowers the chance that later tiles are reached.

:meth:`SessionResponse.take_probabilities` (what regret, the ``oracle`` policy and off-policy
ground truth read per impression) are per-tile probabilities **given the tile is looked at**:
P(detail view | look), P(play | look), P(quality play | look). They do not depend on the other
tiles, so the oracle picks, tile by tile, the image that is best once the member looks at it.
The page-level value of an assignment comes from simulating sessions (:meth:`draw`).

Random draws and per-tile outcomes are vectorized NumPy; the scan itself (which tiles are looked
at, the session clock) is a compiled kernel, :func:`sim.kernels.session.scan_sessions`.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.kernels.session import END_LEAVE, END_PAGE, END_PATIENCE, END_PLAY, scan_sessions  # noqa: F401
from sim.world.response import Outcomes, Page, ResponseModel


class SessionResponse(ResponseModel):
    """Members scan the page in reading order and make at most one committed play per visit
    (module docstring).

    Parameters: :class:`ResponseModel.Params`, one set shared with the independent model (so
    that ``world.response.name`` alone switches models): the logit weights are shared, the
    ``session_*`` intercepts replace the click, play and quality intercepts, the ``dwell``,
    ``detail``, ``patience`` and ``leave`` keys are this model's own, and the attention exponents
    are not used (position acts through the scan). Defaults calibrated on the default world
    (README "simulated vs published", ``python -m sim.sessions_report``)."""

    name = "session"

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        # The independent model's logits with this model's intercepts (per look, not per tile shown).
        self.logit_params = replace(cfg, click_intercept=cfg.session_click_intercept,
                                    fit_weight=cfg.session_fit_weight,
                                    play_intercept=cfg.session_play_intercept,
                                    quality_intercept=cfg.session_quality_intercept)

    # Position acts through the scan, not through a per-tile attention factor.
    def attention(self, row: np.ndarray, column: np.ndarray) -> np.ndarray:
        """1 for every tile: the take probabilities are conditional on the tile being looked at."""
        return np.ones(np.shape(row), dtype=np.float32)

    @property
    def scroll_continue(self) -> float:
        return self.cfg.session_scroll_continue

    @property
    def position_bias(self) -> bool:
        return False

    def draw(self, p_click: np.ndarray, p_play: np.ndarray, p_quality: np.ndarray,
             rng: np.random.Generator, click_delay_mean: float, play_delay_mean: float,
             page: Page | None = None) -> Outcomes:
        """Simulate the sessions of the pages in ``page`` (module docstring).

        Parameters
        ----------
        p_click, p_play, p_quality : ndarray, shape (n,)   per-look probabilities of the shown images
        rng : every draw comes from it
        click_delay_mean, play_delay_mean : unused (the session clock times every event)
        page : where each impression sits; None: every impression is a page of its own

        Returns
        -------
        Outcomes with the session fields filled; ``click_delay`` / ``play_delay`` (minutes) are
        the session clock's look -> detail view and detail view -> play times.
        """
        c = self.cfg
        n = p_click.shape[0]
        if page is None:
            page = Page(np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
        visit = np.asarray(page.visit, dtype=np.int64)
        key = (visit * 65536 + np.asarray(page.row, np.int64)) * 65536 + np.asarray(page.column, np.int64)
        order = None if n < 2 or (np.diff(key) > 0).all() else np.argsort(key, kind="stable")
        p_click, p_play, p_quality = (np.asarray(x, np.float32) for x in (p_click, p_play, p_quality))
        if order is not None:
            visit, p_click, p_play, p_quality = visit[order], p_click[order], p_play[order], p_quality[order]
        starts = np.flatnonzero(np.r_[True, visit[1:] != visit[:-1]]) if n else np.zeros(0, np.int64)
        n_sessions = starts.size

        # -- every draw, in a fixed order: per tile, then per session -----------------------
        u = rng.random((n, 5), dtype=np.float32)
        expo = rng.standard_exponential((n, 2), dtype=np.float32)
        patience = c.patience_seconds * np.exp(c.patience_sigma * rng.standard_normal(n_sessions))

        # -- what each tile would do if the member looked at it -------------------------------
        opened = u[:, 0] < p_click
        played = opened & (u[:, 1] * p_click < p_play)            # nested, one uniform each
        quality = played & (u[:, 2] * p_play < p_quality)
        thr, mean_q = c.quality_threshold_minutes, c.mean_quality_minutes
        minutes = np.zeros(n, np.float32)
        pl = np.flatnonzero(played)                               # few: compute their minutes only
        minutes[pl] = np.where(quality[pl], thr - mean_q * np.log1p(-u[pl, 3] * 0.999999), u[pl, 3] * thr)
        leave = (u[:, 4] < c.leave_probability) & ~quality
        dwell = c.dwell_min_seconds + (c.dwell_seconds - c.dwell_min_seconds) * expo[:, 0]
        detail = c.detail_seconds * expo[:, 1] * opened
        browse = (dwell + detail).astype(np.float64)              # spends patience
        watch = np.zeros(n)                                       # abandoned play: back to browsing
        ab = pl[~quality[pl]]
        watch[ab] = minutes[ab] * 60.0

        # -- the scan, compiled: which tiles are looked at, and the session clock
        (looked, click, play, quality_play, look_second, click_second, play_second, click_delay,
         play_delay, session_seconds, end_reason) = scan_sessions(
            starts.astype(np.int64), browse, watch, dwell, np.asarray(detail, np.float32), opened, played, quality,
            leave, patience)
        out = Outcomes(
            click=click, play=play, quality_play=quality_play, minutes=minutes * play,
            click_delay=click_delay, play_delay=play_delay,
            look=looked, look_second=look_second, click_second=click_second, play_second=play_second,
            session_seconds=session_seconds, end_reason=end_reason)
        if order is not None:       # back to the caller's order
            inverse = np.empty(n, np.int64)
            inverse[order] = np.arange(n)
            out = Outcomes(**{k: v[inverse] for k, v in vars(out).items()})
        return out


