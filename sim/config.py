"""Validated configuration dataclasses.

Hydra composes YAML files under ``configs/`` into a plain nested dict; :func:`experiment_config_from_dict`
turns that dict into the frozen dataclasses below and refuses anything out of range *before* a
simulation starts. Every refusal is a :class:`ConfigError` whose message names the key, the value
and what is allowed, e.g. ``world.n_members = -5 is out of range: must be an integer >= 1``.

Nothing here imports Hydra: ``sim`` stays usable from plain Python.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from sim.schema import (ConfigError, check_bool, check_choice, check_float, check_int,  # noqa: F401
                        check_optional_str, range_text)

#: UTC offsets (hours) of the countries members can live in. Members see a diurnal visit curve
#: in their local time, so a world with several time zones has a flatter global load curve.
COUNTRY_UTC_OFFSETS: dict[str, float] = {
    "US": -5.0, "BR": -3.0, "GB": 0.0, "DE": 1.0, "IN": 5.5, "JP": 9.0, "AU": 10.0, "MX": -6.0,
}
#: Devices and the number of grid columns each shows without horizontal scrolling.
DEVICE_VISIBLE_COLUMNS: dict[str, int] = {"tv": 8, "web": 8, "tablet": 6, "mobile": 4}

RANKER_NAMES = ("popularity", "learned", "oracle", "random")
RANKER_CORRECTIONS = ("none", "ipw")
RANKER_RETRAIN = ("repeated", "once")
#: Attributed outcome a ranker learns from: plays (default) or clicks (README, "Feedback loops").
RANKER_SIGNALS = ("play", "click")
#: ``shared``: one ranker trained on every cell's logs (as in production, where an A/B test's cells
#: feed the same ranker); ``per_cell``: each cell without its own ``ranker`` gets a copy of the
#: experiment's ranker trained on that cell's logs only (no interference through the ranker).
RANKER_SCOPES = ("shared", "per_cell")
ENGINE_MODES = ("batched", "reference")
#: Where member shards run (README, "Scale"): in this process, in worker processes, on Ray.
ENGINE_BACKENDS = ("local", "processes", "ray")
#: Engine keys that say how a run executes, not what it simulates: results do not depend on them.
EXECUTION_KEYS = ("backend", "shards", "sync_hours", "ray_address", "ray_cpus_per_shard", "progress")
#: Analyses an experiment can request (modules of experiments.analyses).
ANALYSIS_NAMES = ("cold_start", "netflix_replay", "feedback_loop", "clickbait_loop")
REWARD_NAMES = ("click", "play", "quality_play")


# The checkers live with the field declarations (sim.schema); re-exported for callers.
_range_text = range_text
_optional_str = check_optional_str


def _check_keys(prefix: str, given: Mapping[str, Any], cls) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)}
    for k in given:
        if k not in allowed:
            raise ConfigError(f"{prefix}.{k}" if prefix else k, given[k],
                              f"unknown key; known keys of {prefix or 'the config'}: "
                              + ", ".join(sorted(allowed)))


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponseConfig:
    """Ground-truth member response. Defaults calibrated so that CTR is ~1-5 % per impression,
    take fraction ~0.5-2 % and the oracle artwork choice beats uniform by 10-40 % (README)."""

    row_attention_exponent: float = 0.8     # attention ~ (row+1)^-a (T-RECS / Chaney et al. use ~0.8)
    column_attention_exponent: float = 0.8
    scroll_continue: float = 0.8            # P(member scrolls to the next row)
    click_intercept: float = -5.0           # logit of click given the tile is looked at
    fit_weight: float = 1.0                 # weight of standardised member-title fit
    title_quality_weight: float = 0.4
    theme_weight: float = 3.0               # artwork theme x member taste match
    appeal_sd: float = 0.25                 # spread of artwork appeal (logit units)
    clickbait_appeal: float = 0.8           # extra appeal of an unrepresentative image
    familiar_artwork_scale: float = 0.35    # artwork effect for titles the member interacted with
    play_intercept: float = -0.6             # logit P(play | click)
    play_fit_weight: float = 0.5
    play_representativeness_weight: float = 2.0
    quality_intercept: float = -1.4          # logit P(quality play | play)
    quality_fit_weight: float = 0.5
    quality_representativeness_weight: float = 1.0
    artwork_change_penalty: float = 0.0     # click-logit cost when a title's image changed since last shown
    quality_threshold_minutes: float = 15.0
    mean_quality_minutes: float = 55.0      # minutes beyond the threshold, exponential

    @staticmethod
    def from_dict(d: Mapping[str, Any], prefix: str = "world.response") -> "ResponseConfig":
        _check_keys(prefix, d, ResponseConfig)
        out = {}
        for f in dataclasses.fields(ResponseConfig):
            v = d.get(f.name, f.default)
            key = f"{prefix}.{f.name}"
            if f.name == "scroll_continue":
                out[f.name] = check_float(key, v, 0.0, 1.0)
            elif f.name.endswith("_exponent") or f.name in ("appeal_sd", "clickbait_appeal"):
                out[f.name] = check_float(key, v, 0.0, 10.0)
            elif f.name == "artwork_change_penalty":
                out[f.name] = check_float(key, v, 0.0, 20.0)
            elif f.name == "familiar_artwork_scale":
                out[f.name] = check_float(key, v, 0.0, 1.0)
            elif f.name in ("quality_threshold_minutes", "mean_quality_minutes"):
                out[f.name] = check_float(key, v, 0.0, 10_000.0, lo_open=True)
            else:
                out[f.name] = check_float(key, v, -20.0, 20.0)
        return ResponseConfig(**out)


@dataclass(frozen=True)
class WorldConfig:
    """Who watches (members), what is watched (catalog) and how they respond."""

    name: str = "default"
    n_members: int = 20_000
    n_titles: int = 1_000
    n_genres: int = 16
    artworks_min: int = 3
    artworks_max: int = 12
    title_genre_concentration: float = 0.25  # Dirichlet alpha of a title's genre mixture
    taste_concentration: float = 0.15        # Dirichlet alpha of member tastes (small = sparse)
    launch_share: float = 0.1                # share of titles launching during the run
    hype_spread: float = 1.0                 # scales log launch hype; 0: every title equally hyped
    visits_per_day: float = 0.6              # mean visit rate per member
    visit_rate_sigma: float = 0.8            # log-normal spread of member visit rates
    diurnal_amplitude: float = 0.6           # relative peak-to-mean of the daily visit curve
    diurnal_peak_hour: float = 20.0          # local hour of peak visits
    countries: tuple[str, ...] = ("US", "BR", "GB", "DE", "IN", "JP")
    history_length: int = 32                 # titles remembered per member (ring buffer)
    initial_plays: float = 6.0               # mean plays in a member's history at the start
    shown_memory: int = 64                   # titles whose last shown image is remembered per member
    response: ResponseConfig = field(default_factory=ResponseConfig)

    @staticmethod
    def from_dict(d: Mapping[str, Any], prefix: str = "world") -> "WorldConfig":
        _check_keys(prefix, d, WorldConfig)
        defaults = WorldConfig()
        get = lambda k: d.get(k, getattr(defaults, k))  # noqa: E731
        name = get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{prefix}.name", name, "a non-empty string")
        countries = get("countries")
        if isinstance(countries, str) or not hasattr(countries, "__iter__") or len(list(countries)) == 0:
            raise ConfigError(f"{prefix}.countries", countries,
                              "a non-empty list of " + ", ".join(COUNTRY_UTC_OFFSETS))
        for c in countries:
            check_choice(f"{prefix}.countries", c, tuple(COUNTRY_UTC_OFFSETS))
        cfg = WorldConfig(
            name=name,
            n_members=check_int(f"{prefix}.n_members", get("n_members"), 1, 50_000_000),
            n_titles=check_int(f"{prefix}.n_titles", get("n_titles"), 1, 1_000_000),
            n_genres=check_int(f"{prefix}.n_genres", get("n_genres"), 1, 256),
            artworks_min=check_int(f"{prefix}.artworks_min", get("artworks_min"), 1, 64),
            artworks_max=check_int(f"{prefix}.artworks_max", get("artworks_max"), 1, 64),
            title_genre_concentration=check_float(f"{prefix}.title_genre_concentration",
                                                  get("title_genre_concentration"), 0, 100, lo_open=True),
            taste_concentration=check_float(f"{prefix}.taste_concentration",
                                            get("taste_concentration"), 0, 100, lo_open=True),
            launch_share=check_float(f"{prefix}.launch_share", get("launch_share"), 0.0, 1.0),
            hype_spread=check_float(f"{prefix}.hype_spread", get("hype_spread"), 0.0, 10.0),
            visits_per_day=check_float(f"{prefix}.visits_per_day", get("visits_per_day"), 0, 1000,
                                       lo_open=True),
            visit_rate_sigma=check_float(f"{prefix}.visit_rate_sigma", get("visit_rate_sigma"), 0, 5),
            diurnal_amplitude=check_float(f"{prefix}.diurnal_amplitude", get("diurnal_amplitude"), 0, 1),
            diurnal_peak_hour=check_float(f"{prefix}.diurnal_peak_hour", get("diurnal_peak_hour"),
                                          0, 24, hi_open=True),
            countries=tuple(countries),
            history_length=check_int(f"{prefix}.history_length", get("history_length"), 1, 4096),
            initial_plays=check_float(f"{prefix}.initial_plays", get("initial_plays"), 0, 10_000),
            shown_memory=check_int(f"{prefix}.shown_memory", get("shown_memory"), 1, 4096),
            response=ResponseConfig.from_dict(_mapping(f"{prefix}.response", d.get("response") or {}),
                                              f"{prefix}.response"),
        )
        if cfg.artworks_max < cfg.artworks_min:
            raise ConfigError(f"{prefix}.artworks_max", cfg.artworks_max,
                              f"an integer >= world.artworks_min ({cfg.artworks_min})")
        return cfg


@dataclass(frozen=True)
class EngineConfig:
    """Clock, cadences and delays of the closed loop (all times in simulated minutes/hours)."""

    mode: str = "batched"                 # "reference": one SimPy process per visit (tests)
    days: float = 14.0
    window_minutes: float = 5.0           # serving window: visits rendered together, model frozen
    retrain_hours: float = 6.0            # artwork-policy retrain cadence
    deploy_delay_minutes: float = 30.0    # retrain -> new model serving
    ranker_retrain_hours: float = 24.0
    attribution_minutes: float = 120.0    # outcomes later than this after the impression are not credited
    log_delay_minutes: float = 60.0       # attributed record -> available to the trainers
    click_delay_minutes: float = 1.0      # mean delay impression -> click (exponential)
    play_delay_minutes: float = 2.0       # mean delay click -> play start (exponential)
    snapshot_hours: float = 6.0           # time-series resolution
    member_block: int = 65_536            # random streams are keyed by member block, not by shard
    log_impressions: bool = True
    log_chunk_rows: int = 500_000
    track_regret: bool = True
    progress: bool = True
    # Execution (EXECUTION_KEYS): same config and seed give identical results for any of these.
    backend: str = "local"                # local | processes (worker processes) | ray
    shards: int = 1                       # member shards (whole member blocks each)
    sync_hours: float = 1.0               # longest stretch shards serve between two reductions
    ray_address: str | None = None        # None: start a local Ray; "auto" or "ray://host:10001": a cluster
    ray_cpus_per_shard: float = 1.0

    @staticmethod
    def from_dict(d: Mapping[str, Any], prefix: str = "engine") -> "EngineConfig":
        _check_keys(prefix, d, EngineConfig)
        defaults = EngineConfig()
        get = lambda k: d.get(k, getattr(defaults, k))  # noqa: E731
        pos = lambda k, hi=1e7: check_float(f"{prefix}.{k}", get(k), 0, hi, lo_open=True)  # noqa: E731
        nonneg = lambda k, hi=1e7: check_float(f"{prefix}.{k}", get(k), 0, hi)  # noqa: E731
        cfg = EngineConfig(
            mode=check_choice(f"{prefix}.mode", get("mode"), ENGINE_MODES),
            days=pos("days", 3650), window_minutes=pos("window_minutes", 1440),
            retrain_hours=pos("retrain_hours", 1e5), deploy_delay_minutes=nonneg("deploy_delay_minutes"),
            ranker_retrain_hours=pos("ranker_retrain_hours", 1e5),
            attribution_minutes=pos("attribution_minutes"), log_delay_minutes=nonneg("log_delay_minutes"),
            click_delay_minutes=nonneg("click_delay_minutes"), play_delay_minutes=nonneg("play_delay_minutes"),
            snapshot_hours=pos("snapshot_hours", 1e5),
            member_block=check_int(f"{prefix}.member_block", get("member_block"), 1, 1 << 30),
            log_impressions=check_bool(f"{prefix}.log_impressions", get("log_impressions")),
            log_chunk_rows=check_int(f"{prefix}.log_chunk_rows", get("log_chunk_rows"), 1, 1 << 31),
            track_regret=check_bool(f"{prefix}.track_regret", get("track_regret")),
            progress=check_bool(f"{prefix}.progress", get("progress")),
            backend=check_choice(f"{prefix}.backend", get("backend"), ENGINE_BACKENDS),
            shards=check_int(f"{prefix}.shards", get("shards"), 1, 4096),
            sync_hours=pos("sync_hours", 1e5),
            ray_address=_optional_str(f"{prefix}.ray_address", get("ray_address")),
            ray_cpus_per_shard=check_float(f"{prefix}.ray_cpus_per_shard", get("ray_cpus_per_shard"), 0, 1024),
        )
        if cfg.mode == "reference" and (cfg.backend != "local" or cfg.shards != 1):
            raise ConfigError(f"{prefix}.mode", cfg.mode,
                              "batched when engine.backend is not local or engine.shards > 1 "
                              "(reference mode serves one visit at a time in one process)")
        # A model is frozen inside a serving window, so the window must be shorter than every
        # model-update cadence, or retrains would be silently skipped.
        for key, minutes in (("retrain_hours", cfg.retrain_hours * 60),
                             ("ranker_retrain_hours", cfg.ranker_retrain_hours * 60)):
            if cfg.window_minutes >= minutes:
                raise ConfigError(f"{prefix}.window_minutes", cfg.window_minutes,
                                  f"less than engine.{key} ({minutes:g} minutes)")
        return cfg


@dataclass(frozen=True)
class RankerConfig:
    """Homepage ranker and page layout (rows x columns)."""

    name: str = "learned"
    rows: int = 10
    columns: int = 8
    prior_plays: float = 1.0           # popularity: pseudo-plays per title
    half_life_days: float = 7.0        # popularity: decay of old plays
    l2: float = 1.0                    # learned: ridge / pseudo-count on title biases
    # Feedback-loop variants (README, "Feedback loops"):
    exploration_share: float = 0.0     # share of page slots filled with random launched titles
    correction: str = "none"           # learned: "ipw" weights plays by 1/attention and 1/propensity
    position_exponent: float = 0.8     # ipw: attention ~ ((row+1)(col+1))^-a until fitted from exploration
    retrain: str = "repeated"          # "once": fitted on the first retrain's logs, then frozen
    signal: str = "play"               # attributed outcome counted as a title's success: play | click

    @staticmethod
    def from_dict(d: Mapping[str, Any], prefix: str = "ranker") -> "RankerConfig":
        _check_keys(prefix, d, RankerConfig)
        defaults = RankerConfig()
        get = lambda k: d.get(k, getattr(defaults, k))  # noqa: E731
        return RankerConfig(
            name=check_choice(f"{prefix}.name", get("name"), RANKER_NAMES),
            rows=check_int(f"{prefix}.rows", get("rows"), 1, 100),
            columns=check_int(f"{prefix}.columns", get("columns"), 1, 100),
            prior_plays=check_float(f"{prefix}.prior_plays", get("prior_plays"), 0, 1e6, lo_open=True),
            half_life_days=check_float(f"{prefix}.half_life_days", get("half_life_days"), 0, 1e5,
                                       lo_open=True),
            l2=check_float(f"{prefix}.l2", get("l2"), 0, 1e9, lo_open=True),
            exploration_share=check_float(f"{prefix}.exploration_share", get("exploration_share"),
                                          0.0, 1.0, hi_open=True),
            correction=check_choice(f"{prefix}.correction", get("correction"), RANKER_CORRECTIONS),
            position_exponent=check_float(f"{prefix}.position_exponent", get("position_exponent"), 0.0, 10.0),
            retrain=check_choice(f"{prefix}.retrain", get("retrain"), RANKER_RETRAIN),
            signal=check_choice(f"{prefix}.signal", get("signal"), RANKER_SIGNALS),
        )


@dataclass(frozen=True)
class CellConfig:
    """One arm of an experiment: a share of members, an artwork policy, optionally a ranker."""

    name: str
    share: float
    policy: dict[str, Any]
    ranker: RankerConfig | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: one world, one engine setting, a list of cells and a root seed."""

    name: str
    seed: int
    world: WorldConfig
    engine: EngineConfig
    ranker: RankerConfig
    cells: tuple[CellConfig, ...]
    control: str
    ranker_scope: str = "shared"
    analyses: tuple[str, ...] = ()     # experiment-specific analyses run after the simulation


def experiment_config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a composed config dict (Hydra's, or hand-written) and freeze it.

    Expected top-level keys: ``seed``, ``world``, ``engine``, ``ranker``, ``policy``,
    ``experiment`` (``name``, ``cells`` list, ``control``). A missing ``experiment.cells`` means a
    one-cell run of ``policy``.
    """
    known = {"seed", "world", "engine", "ranker", "policy", "experiment"}
    for k in d:
        if k not in known and k != "hydra":
            raise ConfigError(k, d[k], "unknown top-level key; known: " + ", ".join(sorted(known)))
    seed = check_int("seed", d.get("seed", 0), 0, 2**63 - 1)
    world = WorldConfig.from_dict(_mapping("world", d.get("world", {})))
    engine = EngineConfig.from_dict(_mapping("engine", d.get("engine", {})))
    ranker = RankerConfig.from_dict(_mapping("ranker", d.get("ranker", {})))
    exp = _mapping("experiment", d.get("experiment", {}) or {})
    for k in exp:
        if k not in ("name", "cells", "control", "ranker_scope", "analyses"):
            raise ConfigError(f"experiment.{k}", exp[k],
                              "unknown key; known: analyses, cells, control, name, ranker_scope")
    name = exp.get("name", "single")
    if not isinstance(name, str) or not name:
        raise ConfigError("experiment.name", name, "a non-empty string")
    policy = _mapping("policy", d.get("policy", {"name": "thompson"}))
    raw_cells = exp.get("cells")
    if raw_cells is None:
        raw_cells = [{"name": str(policy.get("name", "policy")), "share": 1.0, "policy": policy}]
    if isinstance(raw_cells, (str, bytes)) or not hasattr(raw_cells, "__len__") or len(raw_cells) == 0:
        raise ConfigError("experiment.cells", raw_cells, "a non-empty list of cells")
    cells, names = [], []
    for i, c in enumerate(raw_cells):
        key = f"experiment.cells[{i}]"
        c = _mapping(key, c)
        for k in c:
            if k not in ("name", "share", "policy", "ranker"):
                raise ConfigError(f"{key}.{k}", c[k], "unknown key; known: name, policy, ranker, share")
        cname = c.get("name")
        if not isinstance(cname, str) or not cname:
            raise ConfigError(f"{key}.name", cname, "a non-empty string")
        if cname in names:
            raise ConfigError(f"{key}.name", cname, f"a name not used by another cell (taken: {', '.join(names)}); "
                              "with experiment=baselines pick a policy other than the baselines, "
                              "or use experiment=single")
        names.append(cname)
        share = check_float(f"{key}.share", c.get("share", 1.0 / len(raw_cells)), 0, 1, lo_open=True)
        pol = _mapping(f"{key}.policy", c.get("policy", policy))
        cr = c.get("ranker")
        cells.append(CellConfig(cname, share, dict(pol),
                                None if cr is None else RankerConfig.from_dict(_mapping(f"{key}.ranker", cr),
                                                                               f"{key}.ranker")))
    total = sum(c.share for c in cells)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("experiment.cells[*].share", [c.share for c in cells],
                          f"shares that sum to 1 (they sum to {total:g})")
    control = exp.get("control", cells[0].name)
    check_choice("experiment.control", control, names)
    scope = check_choice("experiment.ranker_scope", exp.get("ranker_scope", "shared"), RANKER_SCOPES)
    if scope == "per_cell":
        cells = [c if c.ranker is not None else dataclasses.replace(c, ranker=ranker) for c in cells]
    analyses = exp.get("analyses") or []
    if isinstance(analyses, str) or not isinstance(analyses, (list, tuple)):
        raise ConfigError("experiment.analyses", analyses, "a list of " + ", ".join(ANALYSIS_NAMES))
    for a in analyses:
        check_choice("experiment.analyses", a, ANALYSIS_NAMES)
    return ExperimentConfig(name, seed, world, engine, ranker, tuple(cells), control, scope,
                            tuple(analyses))


def _mapping(key: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(key, v, "a mapping of keys to values")
    return v


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able dict (for metrics.json)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
