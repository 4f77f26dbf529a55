"""How members respond: the ground-truth response model (only the simulator reads it).

An impression of title t with artwork a at (row, column) to member m:

* looked at with probability ``attention = (row+1)^-a_r * (column+1)^-a_c`` (position bias);
* clicked, if looked at, with ``sigmoid(c0 + w_fit*fit + w_q*quality + s*(w_theme*taste.theme_a + appeal_a))``,
  where ``fit`` is the standardised taste/genre match and ``s`` shrinks the artwork effect for
  titles the member already interacted with (a familiar title is recognised whatever the image);
* played given click with ``sigmoid(p0 + w*fit + w_r*(representativeness - r0))``;
* a *quality play* (watched past the threshold) given play with
  ``sigmoid(q0 + w*fit + w_r*(representativeness - r0) + w_q*quality)``.

So an unrepresentative, high-appeal image (clickbait) raises clicks but not quality plays.

This is the ``independent`` model (every tile on its own). The ``session`` model
(:mod:`sim.world.session`, the default of ``configs/``) reuses these logit pieces per look and
simulates one scan of the whole page per visit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from sim.config import RESPONSE_MODELS
from sim.gather import gather_rows
from sim.schema import param

#: Mean representativeness of artworks (Beta(3, 1.5)); the play terms are centred on it.
REPRESENTATIVENESS_CENTER = 3.0 / 4.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Impressions(Protocol):
    """What a response model reads about n impressions (a :class:`sim.policies.DecisionBatch`
    has all of it): ``member``, ``title``, ``row``, ``column``, ``familiar`` of shape (n,),
    ``candidates`` (n, K) flat artwork ids padded with ``-1``, and ``last_artwork`` (n,) the
    image the member last saw for the title (``-1``: none) or None when not tracked."""

    member: np.ndarray
    title: np.ndarray
    candidates: np.ndarray
    row: np.ndarray
    column: np.ndarray
    familiar: np.ndarray
    last_artwork: np.ndarray | None


class Page(NamedTuple):
    """Where each of n impressions sits on its page, for response models whose outcomes depend on
    the rest of the page (the ``session`` model). All arrays have shape (n,).

    visit : index of the impression's visit (page) in the batch; every impression of a visit is
        in the same :meth:`ResponseModel.draw` call
    row, column : the tile's position (the rendered tiles are those the member scrolled to and
        the device shows)
    member : the member of the visit
    """

    visit: np.ndarray
    row: np.ndarray
    column: np.ndarray
    member: np.ndarray


class TakeProbabilities(NamedTuple):
    """Unconditional P(click), P(play), P(quality play) per impression and candidate, (n, K)."""

    click: np.ndarray
    play: np.ndarray
    quality_play: np.ndarray


@dataclass
class Outcomes:
    """Drawn outcomes of n impressions (true, whether or not later attributed).

    The session fields are None for a model without sessions (``independent``); a model that
    simulates the member's scan of the page (``session``) fills them, all of shape (n,), times in
    seconds since the page was rendered (NaN where the event did not happen):

    look : bool, the tile was looked at;  look_second : when the look began
    click_second : when the detail view opened;  play_second : when the play started
    session_seconds : float32, the length of the impression's session (same on every tile of a visit)
    end_reason : int8, how the session ended (:data:`SESSION_END_REASONS`; same on every tile)
    """

    click: np.ndarray          # (n,) bool
    play: np.ndarray           # (n,) bool
    quality_play: np.ndarray   # (n,) bool
    minutes: np.ndarray        # (n,) float32 watch minutes
    click_delay: np.ndarray    # (n,) float32 minutes impression -> click
    play_delay: np.ndarray     # (n,) float32 minutes click -> play start
    look: np.ndarray | None = None
    look_second: np.ndarray | None = None
    click_second: np.ndarray | None = None
    play_second: np.ndarray | None = None
    session_seconds: np.ndarray | None = None
    end_reason: np.ndarray | None = None

    @property
    def has_sessions(self) -> bool:
        return self.session_seconds is not None


#: How a session ends (``Outcomes.end_reason``, the visit log's ``end_reason``).
SESSION_END_REASONS = ("play", "leave", "patience", "page_end")


def _logit_weight(default: float, doc: str) -> Any:
    return param(default, ge=-20.0, le=20.0, doc=doc)


class ResponseModel:
    """Ground truth: hidden tastes, title quality, artwork appeal and representativeness.

    The built-in ``independent`` response model (``world.response.name``): every impression is
    looked at, clicked, played and watched independently of the other tiles on the page. Its
    parameters are declared once in :class:`ResponseModel.Params`; a response model of your own
    subclasses this class, declares its own ``Params`` and is selected by
    ``world.response._target_`` (a subclass in a module of sim/world/ that sets ``name`` is a
    built-in, selectable by name).

    The contract (what the simulator calls; :func:`sim.testing.check_response_model` verifies
    it). A new response model subclasses this class and overrides :meth:`take_probabilities`
    (and, where its behaviour differs, :meth:`attention`, :meth:`title_scores`, :meth:`draw`):

    * ``probabilities(impressions, candidates=None)`` -- the one entry point every caller uses
      (serving, regret, the oracle policy, offline ground truth, analyses). It assembles the
      arguments of ``take_probabilities`` from an :class:`Impressions` object and sets padded
      candidates to 0. Not meant to be overridden.
    * ``take_probabilities(member, title, artworks, row, column, familiar, last_artwork)``
      -> ``(p_click, p_play, p_quality)``, each (n, K) in [0, 1] with
      ``p_quality <= p_play <= p_click <= attention(row, column)``: outcomes are nested (a play
      needs a click, a click needs a look). Column k depends only on candidate k (the other
      candidates are images the member does not see), and nothing is random.
    * ``attention(row, column)`` -> (n,) P(tile looked at), non-increasing in row and column;
      ``position_bias`` says whether it actually falls.
    * ``title_scores(member)`` -> (n, n_titles) true title ranking without the artwork term
      (read by the ``oracle`` ranker and the ranker-drift measure only).
    * ``draw(p_click, p_play, p_quality, rng, click_delay_mean, play_delay_mean, page=None)`` ->
      :class:`Outcomes` of the shown images; every draw from ``rng``. ``page`` (a :class:`Page`)
      says where each impression sits; serving passes every impression of a visit in one call.
      A model whose outcomes depend on the page (``session``) fills the session fields of
      :class:`Outcomes`; with ``page=None`` each impression is a page of its own.
    * ``uses_last_artwork``: True when the probabilities depend on the image last shown (the
      engine must then track shown images).
    * ``scroll_continue``: P(member scrolls to the next row), which sets how many rows are
      rendered (the shard draws each visit's scroll depth from it).
    * ``logit_params``: the parameters :meth:`take_probabilities` and :meth:`title_scores` read
      (``cfg``; a subclass may swap intercepts, as ``session`` does).
    * The hidden truth it was built with (``tastes`` (M, G), ``quality``, ``appeal``,
      ``representativeness``) stays readable: the oracle ranker and analyses read ``tastes``.
    """

    name = "independent"

    @dataclass(frozen=True)
    class Params:
        """Defaults calibrated so that CTR is ~1-5 % per impression, take fraction ~0.5-2 % and
        the oracle artwork choice beats uniform by 10-40 % (README)."""

        row_attention_exponent: float = param(0.8, ge=0.0, le=10.0,
                                              doc="attention ~ (row+1)^-a (T-RECS / Chaney et al. use ~0.8)")
        column_attention_exponent: float = param(0.8, ge=0.0, le=10.0, doc="attention ~ (column+1)^-a")
        scroll_continue: float = param(0.8, ge=0.0, le=1.0, doc="P(member scrolls to the next row)")
        click_intercept: float = _logit_weight(-5.0, "logit of click given the tile is looked at")
        fit_weight: float = _logit_weight(1.0, "click-logit weight of standardised member-title fit")
        title_quality_weight: float = _logit_weight(0.4, "click- and quality-logit weight of title quality")
        theme_weight: float = _logit_weight(3.0, "click-logit weight of artwork theme x member taste")
        appeal_sd: float = param(0.25, ge=0.0, le=10.0, doc="spread of artwork appeal (logit units)")
        clickbait_appeal: float = param(0.8, ge=0.0, le=10.0, doc="extra appeal of an unrepresentative image")
        familiar_artwork_scale: float = param(0.35, ge=0.0, le=1.0,
                                              doc="artwork effect for titles the member interacted with")
        play_intercept: float = _logit_weight(-0.6, "logit P(play | click)")
        play_fit_weight: float = _logit_weight(0.5, "play-logit weight of fit")
        play_representativeness_weight: float = _logit_weight(2.0, "play-logit weight of representativeness")
        quality_intercept: float = _logit_weight(-1.4, "logit P(quality play | play)")
        quality_fit_weight: float = _logit_weight(0.5, "quality-logit weight of fit")
        quality_representativeness_weight: float = _logit_weight(
            1.0, "quality-logit weight of representativeness")
        artwork_change_penalty: float = param(0.0, ge=0.0, le=20.0,
                                              doc="click-logit cost when a title's image changed since last shown")
        quality_threshold_minutes: float = param(15.0, gt=0.0, le=10_000.0,
                                                 doc="minutes watched that make a play a quality play")
        mean_quality_minutes: float = param(55.0, gt=0.0, le=10_000.0,
                                            doc="mean minutes beyond the threshold (exponential)")
        # -- the session model's own parameters (sim/world/session.py; ignored by independent).
        # Both built-ins share this one parameter set, so that ``world.response.name`` alone
        # switches between them (a Hydra override keeps every other key of the node).
        session_click_intercept: float = _logit_weight(
            -4.3, "session: logit of a detail view given the tile is looked at")
        session_fit_weight: float = _logit_weight(0.5, "session: detail-view-logit weight of member-title fit")
        session_play_intercept: float = _logit_weight(-1.2, "session: logit P(play | detail view)")
        session_quality_intercept: float = _logit_weight(
            -0.3, "session: logit P(play not abandoned early | play)")
        session_scroll_continue: float = param(0.93, ge=0.0, le=1.0,
                                               doc="session: P(member scrolls to the next row)")
        dwell_seconds: float = param(2.5, gt=0.0, le=600.0, doc="session: mean seconds looking at one tile")
        dwell_min_seconds: float = param(0.5, ge=0.0, le=600.0,
                                         doc="session: shortest look; dwell = min + exponential(mean - min)")
        detail_seconds: float = param(12.0, ge=0.0, le=3600.0,
                                      doc="session: mean seconds of a detail view (exponential)")
        patience_seconds: float = param(100.0, gt=0.0, le=36_000.0,
                                        doc="session: median browsing time budget (log-normal)")
        patience_sigma: float = param(0.5, ge=0.0, le=5.0, doc="session: log-normal spread of the time budget")
        leave_probability: float = param(0.005, ge=0.0, le=1.0, doc="session: P(member leaves after a look)")

        def __post_init__(self) -> None:
            if self.dwell_min_seconds > self.dwell_seconds:
                from sim.schema import ConfigError
                raise ConfigError("world.response.dwell_min_seconds", self.dwell_min_seconds,
                                  f"a number <= world.response.dwell_seconds ({self.dwell_seconds})")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.__module__.startswith("sim."):
            RESPONSE_MODELS.add(cls)

    def __init__(self, cfg: "ResponseModel.Params", tastes: np.ndarray, title_genres: np.ndarray,
                 artwork_theme: np.ndarray, quality: np.ndarray, appeal: np.ndarray,
                 representativeness: np.ndarray, fit_mean: float, fit_sd: float):
        self.cfg = cfg
        self.tastes = tastes                       # (M, G) float32
        self.title_genres = title_genres           # (T, G) float32
        self.artwork_theme = artwork_theme         # (A, G) float32
        self.quality = quality                     # (T,) float32
        self.appeal = appeal                       # (A,) float32
        self.representativeness = representativeness  # (A,) float32
        self.fit_mean, self.fit_sd = float(fit_mean), float(fit_sd)
        #: The parameters the logits read (a subclass may swap intercepts, as ``session`` does).
        self.logit_params = cfg

    # ---- the entry point every caller uses ----------------------------------------------
    def probabilities(self, impressions: Impressions,
                      candidates: np.ndarray | None = None) -> TakeProbabilities:
        """True P(click), P(play), P(quality play) of each impression for each candidate image.

        Parameters
        ----------
        impressions : Impressions (e.g. a DecisionBatch) of n impressions
        candidates : ndarray, shape (n, k), optional
            Images to evaluate (``-1``: padding); default ``impressions.candidates``. Pass the
            chosen images as ``chosen[:, None]`` to get only theirs (column k of the full call).

        Returns
        -------
        TakeProbabilities of three ndarrays, shape (n, k), 0 where the candidate is ``-1``.
        """
        if candidates is None:
            candidates = impressions.candidates
        p = self.take_probabilities(impressions.member, impressions.title, candidates,
                                    impressions.row, impressions.column, impressions.familiar,
                                    getattr(impressions, "last_artwork", None))
        padded = candidates < 0
        if padded.any():
            p = tuple(np.where(padded, 0.0, np.asarray(x)) for x in p)
        return TakeProbabilities(*p)

    @property
    def uses_last_artwork(self) -> bool:
        """The probabilities depend on ``last_artwork`` (a penalty for a changed image)."""
        return self.cfg.artwork_change_penalty > 0

    @property
    def scroll_continue(self) -> float:
        """P(member scrolls to the next row): how many rows are rendered (shard's scroll depth)."""
        return self.cfg.scroll_continue

    @property
    def position_bias(self) -> bool:
        """Attention falls with row (and column)."""
        return self.cfg.row_attention_exponent > 0 or self.cfg.column_attention_exponent > 0

    # ---- pieces ---------------------------------------------------------------------------
    def attention(self, row: np.ndarray, column: np.ndarray) -> np.ndarray:
        """P(tile looked at), shape (n,)."""
        c = self.cfg
        return ((row + 1.0) ** -c.row_attention_exponent
                * (column + 1.0) ** -c.column_attention_exponent).astype(np.float32)

    def fit(self, member: np.ndarray, title: np.ndarray) -> np.ndarray:
        """Standardised member-title fit, shape (n,)."""
        raw = np.einsum("ng,ng->n", gather_rows(self.tastes, member), gather_rows(self.title_genres, title))
        return (raw - self.fit_mean) / self.fit_sd

    def title_scores(self, member: np.ndarray) -> np.ndarray:
        """True click logit without the artwork term, shape (n_members_given, n_titles).

        Used by the oracle ranker."""
        raw = self.tastes[member] @ self.title_genres.T
        c = self.logit_params
        return (c.fit_weight * (raw - self.fit_mean) / self.fit_sd
                + c.title_quality_weight * self.quality[None, :])

    def take_probabilities(self, member: np.ndarray, title: np.ndarray, artworks: np.ndarray,
                           row: np.ndarray, column: np.ndarray, familiar: np.ndarray,
                           last_artwork: np.ndarray | None = None):
        """True per-impression probabilities for candidate artworks (callers go through
        :meth:`probabilities`).

        Parameters
        ----------
        member, title, row, column, familiar : ndarray, shape (n,)
        artworks : ndarray, shape (n, k)   flat artwork ids; ``-1`` entries are padding (look
            them up safely; :meth:`probabilities` replaces whatever is returned there by 0)
        last_artwork : ndarray, shape (n,), optional
            Image the member last saw for the title (``-1``: never shown; None: not tracked). A
            different image costs ``artwork_change_penalty`` on the click logit (recognisability).

        Returns
        -------
        p_click, p_play, p_quality : ndarray, shape (n, k)
            Unconditional P(click), P(play) and P(quality play) per impression.
        """
        c = self.logit_params
        art = np.maximum(artworks, 0)
        fit = self.fit(member, title)                                        # (n,)
        match = np.einsum("nkg,ng->nk", gather_rows(self.artwork_theme, art), gather_rows(self.tastes, member))
        scale = np.where(familiar, c.familiar_artwork_scale, 1.0).astype(np.float32)
        logit = (c.click_intercept + c.fit_weight * fit + c.title_quality_weight * self.quality[title])
        logit = logit[:, None] + scale[:, None] * (c.theme_weight * match + self.appeal[art])
        if last_artwork is not None and c.artwork_change_penalty > 0:
            changed = (last_artwork[:, None] >= 0) & (artworks != last_artwork[:, None])
            logit = logit - c.artwork_change_penalty * changed
        p_click = self.attention(row, column)[:, None] * sigmoid(logit)
        rep = self.representativeness[art] - REPRESENTATIVENESS_CENTER
        p_play_given_click = sigmoid(c.play_intercept + c.play_fit_weight * fit[:, None]
                                     + c.play_representativeness_weight * rep)
        p_quality_given_play = sigmoid(c.quality_intercept + c.quality_fit_weight * fit[:, None]
                                       + c.quality_representativeness_weight * rep
                                       + c.title_quality_weight * self.quality[title][:, None])
        p_play = p_click * p_play_given_click
        return p_click, p_play, p_play * p_quality_given_play

    def draw(self, p_click: np.ndarray, p_play: np.ndarray, p_quality: np.ndarray,
             rng: np.random.Generator, click_delay_mean: float, play_delay_mean: float,
             page: Page | None = None) -> Outcomes:
        """Draw outcomes for chosen artworks; probabilities have shape (n,).

        ``page``: where the impressions sit (every impression of a visit is in one call); the
        independent model ignores it, a session model scans each page in reading order."""
        n = p_click.shape[0]
        u = rng.random((n, 4), dtype=np.float32)
        click = u[:, 0] < p_click
        # Nested events with one uniform each: P(play) = P(click) * P(play | click), etc.
        play = click & (u[:, 1] * p_click < p_play)
        quality = play & (u[:, 2] * p_play < p_quality)
        thr, mean_q = self.cfg.quality_threshold_minutes, self.cfg.mean_quality_minutes
        # Watch minutes: a quality play lasts past the threshold, a short play stops before it.
        minutes = np.where(quality, thr - mean_q * np.log1p(-u[:, 3] * 0.999999),
                           u[:, 3] * thr) * play
        delays = rng.exponential(1.0, size=(n, 2)).astype(np.float32)
        return Outcomes(click, play, quality, minutes.astype(np.float32),
                        delays[:, 0] * click_delay_mean, delays[:, 1] * play_delay_mean)


RESPONSE_MODELS.add(ResponseModel)
