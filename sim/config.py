"""The configuration schema: every key declared once, with its default, range and a one-line doc.

Hydra composes YAML files under ``configs/`` into a plain nested dict; :func:`experiment_config_from_dict`
turns that dict into the frozen dataclasses below and refuses anything out of range *before* a
simulation starts. Validation and messages are generated from the declarations
(:func:`sim.schema.param`): every refusal is a :class:`ConfigError` naming the key, the value and
what is allowed, e.g. ``world.n_members = -5 is not allowed: an integer in [1, 50000000]``.
Rules that tie two fields together live in the ``__post_init__`` of their class.

The ranker, the response model (``world.response``) and each cell's policy are *specs*: a
built-in by ``name`` or your class by ``_target_``, plus that class's own hyperparameters
(declared on the class, :func:`sim.schema.hyperparameters`). Their registries are declared here
and filled by the modules that define the classes.

Nothing here imports Hydra: ``sim`` stays usable from plain Python (``experiments.config_store``
feeds these declarations to Hydra).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from sim.schema import (ConfigError, Registry, Spec, check_choice, check_field, check_fields,  # noqa: F401
                        check_keys, from_mapping, param, resolve_spec)
from sim.pipeline.config import FaultsConfig
from sim.rundir import check_path_name

#: UTC offsets (hours) of the countries members can live in. Members see a diurnal visit curve
#: in their local time, so a world with several time zones has a flatter global load curve.
COUNTRY_UTC_OFFSETS: dict[str, float] = {
    "US": -5.0, "BR": -3.0, "GB": 0.0, "DE": 1.0, "IN": 5.5, "JP": 9.0, "AU": 10.0, "MX": -6.0,
}
#: Devices and the number of grid columns each shows without horizontal scrolling.
DEVICE_VISIBLE_COLUMNS: dict[str, int] = {"tv": 8, "web": 8, "tablet": 6, "mobile": 4}

#: ``shared``: one ranker trained on every cell's logs (as in production, where an A/B test's cells
#: feed the same ranker); ``per_cell``: each cell without its own ``ranker`` gets a copy of the
#: experiment's ranker trained on that cell's logs only (no interference through the ranker).
RANKER_SCOPES = ("shared", "per_cell")
ENGINE_MODES = ("batched", "reference")
#: Where a world's titles and member tastes come from (``world.source``).
WORLD_SOURCES = ("synthetic", "movielens")
#: Where member shards run (README, "Scale"): in this process, in worker processes, on Ray.
ENGINE_BACKENDS = ("local", "processes", "ray")
#: Engine keys that say how a run executes, not what it simulates: results do not depend on them.
EXECUTION_KEYS = ("backend", "shards", "sync_hours", "ray_address", "ray_cpus_per_shard", "progress",
                  "charts", "overwrite", "memory_limit_gb")
#: Analyses an experiment can request (modules of experiments.analyses).
ANALYSIS_NAMES = ("cold_start", "netflix_replay", "feedback_loop", "clickbait_loop", "incrementality",
                  "pipeline_faults")
REWARD_NAMES = ("click", "play", "quality_play")

# Extension points selected by ``name`` or ``_target_``. Each base class adds its built-in
# subclasses (those in sim/ that set ``name``); the packages are imported on first use, so this
# module imports none of them (data flows one way: config -> world, homepage, policies).
RANKERS: Registry = Registry("ranker", "sim.homepage.Ranker", ("sim.homepage",))
RESPONSE_MODELS: Registry = Registry("response model", "sim.world.response.ResponseModel", ("sim.world",))
POLICIES: Registry = Registry("policy", "sim.policies.ArtworkPolicy", ("sim.policies",))
DEFAULT_RANKER = "learned"
DEFAULT_RESPONSE = "independent"


def ranker_spec(given: Mapping[str, Any] | None, key: str = "ranker") -> Spec:
    """A validated ranker spec from ``{name | _target_, <its parameters>}``."""
    return resolve_spec(RANKERS, given, key, DEFAULT_RANKER)


def response_spec(given: Mapping[str, Any] | None, key: str = "world.response") -> Spec:
    """A validated response-model spec from ``{name | _target_, <its parameters>}``."""
    return resolve_spec(RESPONSE_MODELS, given, key, DEFAULT_RESPONSE)


def RankerConfig(name: str = DEFAULT_RANKER, **params: Any) -> Spec:  # noqa: N802 -- the old class's name
    """A ranker spec from Python: ``RankerConfig(name="popularity", half_life_days=2.0)``."""
    return ranker_spec({"name": name, **params})


def ResponseConfig(name: str = DEFAULT_RESPONSE, **params: Any) -> Spec:  # noqa: N802
    """A response-model spec from Python: ``ResponseConfig(clickbait_appeal=1.5)``."""
    return response_spec({"name": name, **params})


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldConfig:
    """Who watches (members), what is watched (catalog) and how they respond."""

    name: str = param("default", nonempty=True, doc="the world's name in results")
    n_members: int = param(20_000, ge=1, le=50_000_000, doc="members in the world")
    n_titles: int = param(1_000, ge=1, le=1_000_000, doc="titles in the catalog")
    n_genres: int = param(16, ge=1, le=256, doc="genres titles mix and members like")
    artworks_min: int = param(3, ge=1, le=64, doc="fewest images per title")
    artworks_max: int = param(12, ge=1, le=64, doc="most images per title (>= artworks_min)")
    title_genre_concentration: float = param(0.25, gt=0, le=100, doc="Dirichlet alpha of a title's genre mixture")
    taste_concentration: float = param(0.15, gt=0, le=100, doc="Dirichlet alpha of member tastes (small = sparse)")
    launch_share: float = param(0.1, ge=0.0, le=1.0, doc="share of titles launching during the run")
    hype_spread: float = param(1.0, ge=0.0, le=10.0, doc="scales log launch hype; 0: every title equally hyped")
    visits_per_day: float = param(0.6, gt=0, le=1000, doc="mean visit rate per member")
    visit_rate_sigma: float = param(0.8, ge=0, le=5, doc="log-normal spread of member visit rates")
    diurnal_amplitude: float = param(0.6, ge=0, le=1, doc="relative peak-to-mean of the daily visit curve")
    diurnal_peak_hour: float = param(20.0, ge=0, lt=24, doc="local hour of peak visits")
    countries: tuple[str, ...] = param(("US", "BR", "GB", "DE", "IN", "JP"), choices=tuple(COUNTRY_UTC_OFFSETS),
                                    nonempty=True, doc="countries members live in (time zones)")
    history_length: int = param(32, ge=1, le=4096, doc="titles remembered per member (ring buffer)")
    initial_plays: float = param(6.0, ge=0, le=10_000, doc="mean plays in a member's history at the start")
    shown_memory: int = param(64, ge=1, le=4096, doc="titles whose last shown image is remembered per member")
    # Where titles and tastes come from (sim/world/movielens.py for the data-driven world).
    source: str = param("synthetic", choices=WORLD_SOURCES,
                        doc="synthetic: drawn; movielens: titles, tastes and visit rates from MovieLens 100k")
    data_path: str | None = param(None, nonempty=True,
                                  doc="movielens: ml-100k folder (GroupLens or RecBole files) or recbole "
                                      "wheel; null: an installed recbole, then the download cache")
    resample_concentration: float = param(100.0, gt=0, le=1e6,
                                          doc="movielens: members beyond the data's users copy a user's "
                                              "taste with Dirichlet noise of this concentration")
    title_quality: tuple[float, ...] = param((), doc="per-title quality (logit units) replacing the drawn "
                                                     "one; written by experiments.calibrate --logs")
    #: How members respond (a response-model spec: ``name`` or ``_target_`` + its parameters).
    response: Spec = field(default_factory=lambda: response_spec({}))

    def __post_init__(self) -> None:
        check_fields(self, "")
        check_path_name("name", self.name)
        if self.title_quality:
            q = self.title_quality
            if len(q) != self.n_titles or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and math.isfinite(v) for v in q):
                raise ConfigError("title_quality", f"[{len(q)} values]",
                                  f"an empty list or world.n_titles ({self.n_titles}) finite numbers")
            object.__setattr__(self, "title_quality", tuple(float(v) for v in q))
        if self.artworks_max < self.artworks_min:
            raise ConfigError("artworks_max", self.artworks_max,
                              f"an integer >= world.artworks_min ({self.artworks_min})")

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None, prefix: str = "world") -> "WorldConfig":
        d = _mapping(prefix, d if d is not None else {})
        rest = {k: v for k, v in d.items() if k != "response"}
        check_keys(prefix, rest, [f.name for f in dataclasses.fields(WorldConfig)], what=prefix)
        response = response_spec(_mapping(f"{prefix}.response", d.get("response") or {}), f"{prefix}.response")
        return from_mapping(WorldConfig, rest, prefix, response=response)


@dataclass(frozen=True)
class EngineConfig:
    """Clock, cadences and delays of the closed loop (all times in simulated minutes/hours)."""

    mode: str = param("batched", choices=ENGINE_MODES, doc="reference: one SimPy process per visit (tests)")
    days: float = param(14.0, gt=0, le=3650, doc="simulated days")
    window_minutes: float = param(5.0, gt=0, le=1440, doc="serving window: visits rendered together, model frozen")
    retrain_hours: float = param(6.0, gt=0, le=1e5, doc="artwork-policy retrain cadence")
    deploy_delay_minutes: float = param(30.0, ge=0, le=1e7, doc="retrain -> new model serving")
    ranker_retrain_hours: float = param(24.0, gt=0, le=1e5, doc="ranker retrain cadence")
    attribution_minutes: float = param(120.0, gt=0, le=1e7,
                                    doc="outcomes later than this after the impression are not credited")
    log_delay_minutes: float = param(60.0, ge=0, le=1e7, doc="attributed record -> available to the trainers")
    click_delay_minutes: float = param(1.0, ge=0, le=1e7, doc="mean delay impression -> click (exponential)")
    play_delay_minutes: float = param(2.0, ge=0, le=1e7, doc="mean delay click -> play start (exponential)")
    snapshot_hours: float = param(6.0, gt=0, le=1e5, doc="time-series resolution")
    member_block: int = param(65_536, ge=1, le=1 << 30, doc="members are drawn and random streams keyed by member block, not by shard")
    log_impressions: bool = param(True, doc="write the impression log (Parquet)")
    log_chunk_rows: int = param(500_000, ge=1, le=1 << 31, doc="rows per log part file")
    track_regret: bool = param(True, doc="measure regret against the oracle image")
    progress: bool = param(True, doc="show a progress bar")
    charts: bool = param(True, doc="draw the run's charts and analyses when it ends "
                                   "(false: python -m experiments.plot RUN draws them later)")
    # Execution (EXECUTION_KEYS): same config and seed give identical results for any of these.
    backend: str = param("local", choices=ENGINE_BACKENDS,
                      doc="local | processes (worker processes) | ray (Ray actors)")
    shards: int = param(1, ge=1, le=4096, doc="member shards (whole member blocks each)")
    sync_hours: float = param(1.0, gt=0, le=1e5, doc="longest stretch shards serve between two reductions")
    ray_address: str | None = param(None, nonempty=True,
                                 doc="backend=ray: null starts a local Ray; auto or ray://head:10001 joins a cluster")
    ray_cpus_per_shard: float = param(1.0, ge=0, le=1024, doc="CPUs Ray reserves per shard")
    overwrite: bool = param(False, doc="write into a run directory holding files this project did not write "
                                       "(entries named like run outputs are replaced, others left alone)")
    memory_limit_gb: float | None = param(None, gt=0, le=1e6,
                                          doc="refuse runs whose memory estimate exceeds this; "
                                              "null: the machine's available memory")
    #: The production pipeline's faults and repairs (sim.pipeline): all off by default.
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    def __post_init__(self) -> None:
        check_fields(self, "")
        if self.mode == "reference" and (self.backend != "local" or self.shards != 1):
            raise ConfigError("mode", self.mode,
                              "batched when engine.backend is not local or engine.shards > 1 "
                              "(reference mode serves one visit at a time in one process)")
        # A model is frozen inside a serving window, so the window must be shorter than every
        # model-update cadence, or retrains would be silently skipped.
        for key, minutes in (("retrain_hours", self.retrain_hours * 60),
                             ("ranker_retrain_hours", self.ranker_retrain_hours * 60)):
            if self.window_minutes >= minutes:
                raise ConfigError("window_minutes", self.window_minutes,
                                  f"less than engine.{key} ({minutes:g} minutes)")

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None, prefix: str = "engine") -> "EngineConfig":
        return from_mapping(EngineConfig, d, prefix)


@dataclass(frozen=True)
class CellConfig:
    """One arm of an experiment: a share of members, an artwork policy, optionally a ranker."""

    name: str = param(nonempty=True, doc="the cell's name in results and charts")
    share: float = param(1.0, gt=0, le=1, doc="share of members (default: equal shares)")
    policy: dict[str, Any] = param(default_factory=dict,
                                doc="artwork policy: name or _target_ + its parameters (default: policy)")
    ranker: Spec | None = None       # this cell's own ranker (default: the experiment's)


@dataclass(frozen=True)
class ExperimentSection:
    """The ``experiment`` keys: which cells run and what they are compared with."""

    name: str = param("single", nonempty=True, doc="the experiment's name (run directory, results)")
    cells: Any = param(None, doc="list of cells {name, share, policy, ranker}; default: one cell running policy")
    control: str | None = param(None, doc="the cell lifts are measured against (default: the first cell)")
    ranker_scope: str = param("shared", choices=RANKER_SCOPES,
                           doc="shared: one ranker learns from every cell; per_cell: one per cell")
    analyses: tuple[str, ...] = param((), choices=ANALYSIS_NAMES, doc="analyses run after the simulation")

    def __post_init__(self) -> None:
        check_fields(self, "")
        check_path_name("name", self.name)     # it names the run directory: never a path


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: one world, one engine setting, a list of cells and a root seed."""

    name: str
    seed: int = param(0, ge=0, le=2**63 - 1, doc="root seed of every random stream")
    world: WorldConfig = field(default_factory=WorldConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ranker: Spec = field(default_factory=lambda: ranker_spec({}))
    cells: tuple[CellConfig, ...] = ()
    control: str = ""
    ranker_scope: str = "shared"
    analyses: tuple[str, ...] = ()     # experiment-specific analyses run after the simulation


#: Top-level keys of a config dict (``hydra`` is ignored).
TOP_LEVEL_KEYS = ("seed", "world", "engine", "ranker", "policy", "experiment")
DEFAULT_POLICY = {"name": "thompson"}


def experiment_config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a composed config dict (Hydra's, or hand-written) and freeze it.

    Expected top-level keys: ``seed``, ``world``, ``engine``, ``ranker``, ``policy``,
    ``experiment`` (``name``, ``cells`` list, ``control``). Every key is optional: a missing one
    takes its declared default, and a missing ``experiment.cells`` means a one-cell run of
    ``policy``.
    """
    check_keys("", {k: v for k, v in d.items() if k != "hydra"}, TOP_LEVEL_KEYS, what="the config")
    seed = check_field(ExperimentConfig, "seed", d.get("seed", 0), "seed")
    world = WorldConfig.from_dict(d.get("world", {}))
    engine = EngineConfig.from_dict(d.get("engine", {}))
    ranker = ranker_spec(_mapping("ranker", d.get("ranker") or {}))
    exp = from_mapping(ExperimentSection, d.get("experiment") or {}, "experiment")
    policy = _mapping("policy", d.get("policy", DEFAULT_POLICY))
    raw_cells = exp.cells
    if raw_cells is None:
        raw_cells = [{"name": str(policy.get("name", "policy")), "share": 1.0, "policy": policy}]
    if isinstance(raw_cells, (str, bytes, Mapping)) or not hasattr(raw_cells, "__len__") or len(raw_cells) == 0:
        raise ConfigError("experiment.cells", raw_cells, "a non-empty list of cells")
    cells: list[CellConfig] = []
    names: list[str] = []
    for i, c in enumerate(raw_cells):
        key = f"experiment.cells[{i}]"
        c = dict(_mapping(key, c))
        check_keys(key, c, [f.name for f in dataclasses.fields(CellConfig)], what="a cell")
        c.setdefault("share", 1.0 / len(raw_cells))
        c["policy"] = dict(_mapping(f"{key}.policy", c.get("policy", policy)))
        own = c.pop("ranker", None)
        cell = from_mapping(CellConfig, c, key,
                            ranker=None if own is None else ranker_spec(_mapping(f"{key}.ranker", own),
                                                                        f"{key}.ranker"))
        if cell.name in names:
            raise ConfigError(f"{key}.name", cell.name,
                              f"a name not used by another cell (taken: {', '.join(names)}); "
                              "with experiment=baselines pick a policy other than the baselines, "
                              "or use experiment=single")
        names.append(cell.name)
        cells.append(cell)
    total = sum(c.share for c in cells)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("experiment.cells[*].share", [c.share for c in cells],
                          f"shares that sum to 1 (they sum to {total:g})")
    control = check_choice("experiment.control", exp.control if exp.control is not None else names[0], names)
    if exp.ranker_scope == "per_cell":
        cells = [c if c.ranker is not None else dataclasses.replace(c, ranker=ranker) for c in cells]
    return ExperimentConfig(exp.name, seed, world, engine, ranker, tuple(cells), control,
                            exp.ranker_scope, tuple(exp.analyses))


def _mapping(key: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(key, v, "a mapping of keys to values")
    return v


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able dict (for metrics.json); a spec gives its config mapping."""
    if isinstance(obj, Spec):
        return to_dict(obj.to_dict())
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
