"""Logged bandit feedback in and out, as Open Bandit Pipeline's ``bandit_feedback`` dict.

The dict has OBP's keys -- ``n_rounds``, ``n_actions``, ``action`` (n,), ``position`` (n,)
0-based, ``reward`` (n,), ``pscore`` (n,), ``context`` (n, d), ``action_context``
(n_actions, d_a) -- plus ``context_names`` (d,) and, where known, extras of shape (n,):
``n_candidates`` (eligible actions are slots ``0 .. n_candidates-1``), ``time``, and for
simulator logs ``title``, ``artwork``, ``member`` (and ``artwork_theme`` (n, n_genres)).

**Simulator logs -> bandit_feedback** (:func:`bandit_feedback_from_log`). Titles have artwork
pools of different sizes, so an action is the *slot index within the logged title's pool* (the
log's ``action`` column; slot 0 is the title's default image), and ``n_actions`` is the largest
pool in the catalog. A title with a smaller pool has eligible actions ``0 .. n_candidates-1``;
the target's ``action_dist`` must put zero mass on the other slots. The same slot of two titles
is a different image, so a slot has no features of its own: ``action_context`` is the identity
(one-hot slot, OBP's default for featureless actions), and the theme of the logged image is
exported per impression as ``artwork_theme``. ``position`` is ``row * columns + column``;
``reward`` is the attributed quality play; ``context`` is the observable member context of the
visit as contextual policies see it (:mod:`sim.features`: genre affinity from history, familiar,
country, device, local hour and weekday; read from the run's ``visit_context/`` log) followed by
the tile's ``row`` and ``column`` -- or ``familiar, row, column`` when visit contexts were not
logged. ``context_names`` names the columns.

**Files -> bandit_feedback** (:func:`load_bandit_feedback`, CSV or Parquet), two layouts:

* *native*: columns ``action`` (int >= 0), ``position`` (int >= 0, 0-based), ``reward``,
  ``pscore`` in (0, 1]; optional ``n_candidates`` (int > action), ``time``, ``title``,
  ``artwork``, ``member`` and any number of ``context_<name>`` numeric columns. This is what
  :func:`save_bandit_feedback` writes (Parquet also keeps ``n_actions`` and ``action_context``
  in its metadata).
* *Open Bandit Dataset* (recognised by ``item_id``): ``timestamp, item_id, position, click,
  propensity_score, user_feature_0..3, user-item_affinity_*`` (a leading unnamed index column is
  ignored). Rows are sorted by ``timestamp``; ``position`` is 1-based in the file and 0-based in
  the dict; ``action = item_id``, ``reward = click``, ``n_actions = max(item_id) + 1`` as in OBP.
  ``context`` is the user features one-hot encoded (hashed strings; first level dropped, as OBP
  does) followed by the affinity floats. An ``item_context.csv`` next to the file gives
  ``action_context`` as OBP builds it; otherwise it is the identity.

A malformed file (missing column, propensity outside (0, 1], empty cell, NaN, negative position,
...) raises :class:`sim.ope.validate.LogValidationError` naming the column and the number of bad
rows; nothing is dropped silently.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.schema import ConfigError
from sim.ope.validate import (LogValidationError, check_no_missing, integer_column, numeric_column,
                              propensity_column, require_columns)

OBP_KEYS = ("n_rounds", "n_actions", "action", "position", "reward", "pscore", "context",
            "action_context")
NATIVE_REQUIRED = ["action", "position", "reward", "pscore"]
OBD_REQUIRED = ["item_id", "position", "click", "propensity_score"]
#: Optional per-impression columns of the native layout, kept as dict extras.
NATIVE_EXTRAS = {"n_candidates": np.int64, "time": np.float64, "title": np.int64,
                 "artwork": np.int64, "member": np.int64}
SIM_CONTEXT = ("familiar", "row", "column")
_METADATA_KEY = b"homepage_sim.bandit_feedback"


# ---- simulator logs ---------------------------------------------------------------------------------
def bandit_feedback_from_log(log: pd.DataFrame, catalog=None, visit_contexts=None) -> dict:
    """A simulator impression log (columns of :mod:`sim.logs`) as a ``bandit_feedback`` dict.

    Parameters
    ----------
    log : DataFrame with one row per impression (e.g. :func:`sim.logs.read_impressions`)
    catalog : the run's :class:`sim.world.Catalog` (optional): sets ``n_actions`` to the largest
        pool (else the largest logged ``n_candidates``) and adds ``artwork_theme``.
    visit_contexts : :class:`sim.ope.runs.VisitContexts` (optional, needs ``catalog``): the
        context then starts with the visit's observable member context (:mod:`sim.features`).
    """
    require_columns(log, ["action", "position", "reward", "pscore", "n_candidates", "title",
                          "artwork", "familiar", "row", "column"], "simulator log")
    action = integer_column(log, "action", 0)
    n_candidates = integer_column(log, "n_candidates", 1)
    _check_eligible(log, action, n_candidates)
    n_actions = catalog.max_artworks if catalog is not None else int(n_candidates.max(initial=1))
    context = np.column_stack([numeric_column(log, c) for c in SIM_CONTEXT]).reshape(len(log), -1)
    names = list(SIM_CONTEXT)
    if visit_contexts is not None and catalog is not None:
        # The member context already holds ``familiar``; keep the tile's row and column after it.
        member_ctx = visit_contexts.for_impressions(log["visit"].to_numpy(np.int64),
                                                    log["familiar"].to_numpy(bool), catalog.n_genres)
        context = np.column_stack([member_ctx.astype(np.float64), context[:, 1:]])
        names = list(visit_contexts.names) + names[1:]
    bf = {
        "n_rounds": len(log), "n_actions": int(n_actions), "action": action,
        "position": integer_column(log, "position", 0),
        "reward": numeric_column(log, "reward"), "pscore": propensity_column(log, "pscore"),
        "context": context, "action_context": np.eye(n_actions), "context_names": names,
        "n_candidates": n_candidates, "time": log["time"].to_numpy(np.float64),
        "title": log["title"].to_numpy(np.int64), "artwork": log["artwork"].to_numpy(np.int64),
        "member": log["member"].to_numpy(np.int64),
    }
    if catalog is not None:
        bf["artwork_theme"] = catalog.artwork_theme[bf["artwork"]].astype(np.float64)
    return bf


def export_bandit_feedback(run_dir: Path | str, cell: str | None = None) -> dict:
    """The impression log of a run directory (one ``cell``, or all) as a ``bandit_feedback`` dict."""
    from sim.logs import read_impressions
    from sim.ope.runs import read_visit_contexts, run_catalog, run_config

    return bandit_feedback_from_log(read_impressions(run_dir, cell=cell, time_order=True),
                                    run_catalog(run_config(run_dir)), read_visit_contexts(run_dir))


# ---- files ----------------------------------------------------------------------------------------
def load_bandit_feedback(path: Path | str, n_actions: int | None = None) -> dict:
    """Load logged bandit feedback from CSV or Parquet (native or Open Bandit Dataset layout).

    Parameters
    ----------
    path : a ``.csv`` file, a ``.parquet`` file or a directory of Parquet parts
    n_actions : number of actions, when the file cannot tell (CSV without ``n_candidates``);
        must exceed every logged action

    Returns
    -------
    dict with OBP's ``bandit_feedback`` keys (see the module docstring).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no logged feedback at {path}")
    meta = {}
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        elif path.is_dir() and any(path.glob("part-*.parquet")):
            from sim.logs import read_impressions

            df = read_impressions(path)     # a simulator log's parts, in log order whatever the shards
        else:
            df = pd.read_parquet(path)
            if path.is_file():
                raw = pq.read_schema(path).metadata or {}
                meta = json.loads(raw[_METADATA_KEY]) if _METADATA_KEY in raw else {}
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as err:
        # Corrupt or truncated Parquet, a file that is not CSV: one line naming the file.
        raise LogFileError(str(path), f"cannot be read as {'CSV' if path.suffix.lower() == '.csv' else 'Parquet'}"
                                      f" ({_first_line(err)}); is it truncated or corrupt?") from None
    if not isinstance(meta, dict):
        raise LogFileError(str(path), f"its metadata {_METADATA_KEY.decode()} is a JSON "
                                      f"{type(meta).__name__}, not an object with n_actions")
    if "item_id" in df.columns:
        item_context = path.with_name("item_context.csv") if path.is_file() else path / "item_context.csv"
        return _from_obd(df, item_context if item_context.is_file() else None, n_actions)
    return _from_native(df, meta, n_actions)


class LogFileError(ValueError):
    """A log file (or its metadata) that cannot be read at all: one line naming it."""

    def __init__(self, what: str, problem: str):
        super().__init__(f"{what}: {problem}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


#: Largest ``n_actions`` whose default ``action_context`` is a dense identity (8 MB); above it
#: a sparse identity (scipy.sparse), so memory never grows with the square of the largest action.
DENSE_IDENTITY_MAX = 1024


def identity_action_context(n_actions: int):
    """OBP's featureless ``action_context``: the identity, sparse for many actions."""
    if n_actions <= DENSE_IDENTITY_MAX:
        return np.eye(n_actions)
    import scipy.sparse

    return scipy.sparse.identity(n_actions, format="csr", dtype=np.float64)


def _n_actions(value, source: str) -> int | None:
    """A given ``n_actions`` (argument or file metadata) as an int >= 1, else a one-line refusal."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) \
            or not float(value).is_integer() or not 1 <= value <= MAX_ACTIONS:
        raise ConfigError("n_actions", value, f"an integer in [1, {MAX_ACTIONS}] (given by {source})")
    return int(value)


#: Largest number of actions a log may declare (the simulator's flat artwork ids are int32).
MAX_ACTIONS = 2 ** 31 - 1


def _from_native(df: pd.DataFrame, meta: dict, n_actions: int | None) -> dict:
    require_columns(df, NATIVE_REQUIRED, "native")
    action = integer_column(df, "action", 0)
    bf = {"action": action, "position": integer_column(df, "position", 0),
          "reward": numeric_column(df, "reward"), "pscore": propensity_column(df, "pscore")}
    for k, dtype in NATIVE_EXTRAS.items():
        if k in df.columns:
            bf[k] = (integer_column(df, k, 1 if k == "n_candidates" else 0) if dtype is np.int64
                     else numeric_column(df, k))
    if "n_candidates" in bf:
        _check_eligible(df, action, bf["n_candidates"])
    names = [c for c in df.columns if str(c).startswith("context_")]
    bf["context"] = (np.column_stack([numeric_column(df, c) for c in names]) if names
                     else np.zeros((len(df), 0)))
    bf["context_names"] = [str(c)[len("context_"):] for c in names]
    inferred = max(int(action.max(initial=-1)) + 1, int(bf.get("n_candidates", np.zeros(1, int)).max(initial=0)))
    n = _n_actions(n_actions, "n_actions=") or _n_actions(meta.get("n_actions"), "the Parquet metadata") \
        or inferred
    _check_n_actions(df, action, n, "action")
    if "n_candidates" in bf:
        _check_n_actions(df, bf["n_candidates"] - 1, n, "n_candidates")
    bf["n_actions"] = n
    bf["action_context"] = (_meta_action_context(meta["action_context"], n)
                            if "action_context" in meta else identity_action_context(n))
    bf["n_rounds"] = len(df)
    return bf


def _from_obd(df: pd.DataFrame, item_context: Path | None, n_actions: int | None) -> dict:
    df = df.drop(columns=[c for c in df.columns if re.fullmatch(r"Unnamed: \d+|", str(c))])
    require_columns(df, OBD_REQUIRED, "Open Bandit Dataset")
    if "timestamp" in df.columns:
        check_no_missing(df, ["timestamp"])
        ts = pd.to_datetime(df["timestamp"], errors="coerce", utc=True)
        bad = ts.isna().to_numpy()
        if bad.any():
            raise LogValidationError("timestamp", bad.sum(), len(df), "are not timestamps")
        df = df.iloc[np.argsort(ts.to_numpy(), kind="stable")].reset_index(drop=True)
    action = integer_column(df, "item_id", 0)
    position = integer_column(df, "position", 1, "positions are 1-based in the Open Bandit Dataset "
                                                  "layout") - 1
    user_cols = [c for c in df.columns if str(c).startswith("user_feature")]
    affinity_cols = [c for c in df.columns if str(c).startswith("user-item_affinity")]
    check_no_missing(df, user_cols)
    onehot = pd.get_dummies(df[user_cols].astype(str), drop_first=True)
    affinity = [numeric_column(df, c) for c in affinity_cols]
    context = np.column_stack([onehot.to_numpy(np.float64)] + affinity) if affinity else onehot.to_numpy(np.float64)
    n = _n_actions(n_actions, "n_actions=") or int(action.max(initial=-1)) + 1
    _check_n_actions(df, action, n, "item_id")
    return {
        "n_rounds": len(df), "n_actions": n, "action": action, "position": position,
        "reward": numeric_column(df, "click"), "pscore": propensity_column(df, "propensity_score"),
        "context": context.reshape(len(df), -1),
        "action_context": _obd_item_context(item_context, n) if item_context else identity_action_context(n),
        "context_names": list(onehot.columns) + affinity_cols,
    }


def _meta_action_context(value, n_actions: int) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        out = None
    if out is None or out.ndim != 2 or out.shape[0] != n_actions:
        raise LogFileError("action_context", "in the Parquet metadata is not a list of "
                           f"n_actions = {n_actions} equal-length lists of numbers")
    return out


def _obd_item_context(path: Path, n_actions: int) -> np.ndarray:
    """OBP's item features: label-encoded categorical item features, then ``item_feature_0``."""
    try:
        items = pd.read_csv(path, index_col=0)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LogFileError(str(path), f"cannot be read as CSV ({_first_line(err)})") from None
    require_columns(items, ["item_id", "item_feature_0"], f"Open Bandit Dataset {path.name}")
    items = items.sort_values("item_id")
    if len(items) != n_actions:
        raise LogValidationError("item_id", abs(len(items) - n_actions), n_actions,
                                 f"differ between the log and {path.name}")
    cats = [c for c in items.columns if c.startswith("item_feature") and c != "item_feature_0"]
    coded = [np.unique(items[c].astype(str), return_inverse=True)[1] for c in cats]
    return np.column_stack(coded + [items["item_feature_0"].to_numpy(np.float64)]).astype(np.float64)


def _check_eligible(df: pd.DataFrame, action: np.ndarray, n_candidates: np.ndarray) -> None:
    bad = action >= n_candidates
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LogValidationError("action", bad.sum(), len(df), "are not below n_candidates",
                                 f"first: row {i}, action {action[i]}, n_candidates {n_candidates[i]}")


def _check_n_actions(df: pd.DataFrame, slot: np.ndarray, n_actions: int, column: str) -> None:
    """Refuse rows whose (largest) action slot is not below ``n_actions``."""
    bad = slot >= n_actions
    if bad.any():
        raise LogValidationError(column, bad.sum(), len(df), f"refer to actions beyond n_actions = {n_actions}")


def save_bandit_feedback(bandit_feedback: dict, path: Path | str) -> Path:
    """Write a ``bandit_feedback`` dict in the native layout (``.csv`` or ``.parquet``).

    Per-impression extras of shape (n,) are written as columns; ``n_actions`` and
    ``action_context`` go into the Parquet metadata (a CSV reader infers them, or takes
    ``n_actions=``). Two-dimensional extras such as ``artwork_theme`` are not written.
    """
    path = Path(path)
    bf = bandit_feedback
    n = int(bf["n_rounds"])
    cols = {k: np.asarray(bf[k]) for k in NATIVE_REQUIRED}
    names = bf.get("context_names") or [str(j) for j in range(np.shape(bf["context"])[1])]
    for j, name in enumerate(names):
        cols[f"context_{name}"] = np.asarray(bf["context"])[:, j]
    for k in NATIVE_EXTRAS:
        if k in bf and np.shape(bf[k]) == (n,):
            cols[k] = np.asarray(bf[k])
    df = pd.DataFrame(cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        df.to_csv(path, index=False, float_format="%.17g")
    else:
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {"n_actions": int(bf["n_actions"]),
                "action_context": np.asarray(bf["action_context"]).tolist()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               _METADATA_KEY: json.dumps(meta).encode()})
        pq.write_table(table, path)
    return path
