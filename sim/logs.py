"""Columnar impression log, streamed to Parquet in chunks so memory does not grow with time.

One row per impression. Column names follow Open Bandit Pipeline where the field has one
(``action``, ``pscore``, ``position``, ``reward``); the rest are the simulator's vocabulary::

    time, visit, member, cell, title, artwork, action, n_candidates, familiar, row, column,
    position, pscore, policy, model_version, click, play, quality_play, minutes, reward,
    expected_take, uniform_take, oracle_take

``expected_take`` is the true probability of a quality play for the shown image, and
``uniform_take`` / ``oracle_take`` the same for a uniformly random image and for the best image
of the pool: ground truth that only a simulator has, for low-variance analyses (drop them to get
what production logs);
``familiar`` says whether the member had interacted with the title before the impression;
``reward`` is the *attributed* quality play (outcomes after the attribution window are not
credited), ``quality_play`` the true outcome; ``cell`` and ``policy`` are dictionary-encoded.
Read a run's log with one call: :func:`read_impressions` (``pandas.read_parquet(run_dir / "logs")``
reads the same rows, in the order of the part files).

**Shards write their own parts** (:class:`LogTarget`): a part file is named
``part-<first block of its shard>-<part number>.parquet``, and a shard writes its batches in
(window, block) order. The rows of a run, in that order over all shards, are the *log order*,
the same whatever the number of shards: :func:`read_impressions` and :func:`read_visit_log`
restore it (a stable sort by the batch a visit id encodes, :data:`VISIT_ID_BITS`) when the parts
come from more than one shard; one shard's parts are already in it.

**Page propensities** (page-level OPE) are not extra columns: they are derived exactly at read
time by :func:`sim.ope.pages.slate_feedback_from_log`. A policy that draws each tile's image
independently given the page (every built-in except ``lints`` / ``logistic_ts``, which share one
posterior draw per page) gives its page the product of the tiles' ``pscore``; the page up to a
tile (``pscore_cascade``) is the product over the tiles before it in reading order (``row``,
then ``column``), all within one ``visit``. The log holds every factor, so storing the products
would add bytes per row and work on the hot path for no information.

Under a response model that simulates sessions (``world.response.name=session``) every
impression also has the member's scan of the page, times in seconds since the page was rendered
(null, NaN in pandas, where the event did not happen)::

    looked, look_second, click_second, play_second

``looked``: the tile was looked at before the session ended; ``click_second`` the detail view
(the *click*), ``play_second`` the play start (a quality play starts then too; it is the play
that ends the session). Models without sessions (``independent``) log none of these columns.

With the production pipeline's faults or repairs on (``engine.faults``, :mod:`sim.pipeline`) the
log holds what the pipeline *reports*, not one row per rendered impression: rows can be missing
(``unlogged``), repeated (a ``duplicate`` event fans the join out) or never rendered; ``click``,
``play``, ``reward`` and ``pscore`` are as reported and joined, while ``quality_play``,
``minutes`` and the ``*_take`` columns stay the simulator's truth of the impression (false / 0 on
a row that was never rendered). Three more columns then::

    impression_id, rendered, fallback

``impression_id`` (visit id * 4096 + position: repeated rows share it), ``rendered`` (false: the
device never rendered the tile, no render confirmation), ``fallback`` (a personalization timeout
served the title's default image, logged truthfully; false under the
``fallback_logged_as_policy`` bug). Runs with faults off log none of these columns.

The observable member context of every visit (the features a contextual policy saw, layout in
:mod:`sim.features`) goes to a second dataset, ``visit_context/``, one row per visit: ``visit,
member, time, context`` (a fixed-size list of float32; the impression's ``familiar`` column
completes it). Per visit, not per impression, because a page's ~30 impressions share it.
Under a session model each visit row also has the session: ``session_seconds`` (its length),
``end_reason`` (0 play, 1 leave, 2 patience ran out, 3 end of the page: the member stopped
scrolling; :data:`sim.world.response.SESSION_END_REASONS`), ``looks``, ``detail_views``,
``plays`` and ``first_play_second`` (NaN without a play).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC_COLUMNS = {
    "time": np.float64, "visit": np.int64, "member": np.int32, "title": np.int32,
    "artwork": np.int32, "action": np.int16, "n_candidates": np.int16, "familiar": np.bool_,
    "row": np.int16,
    "column": np.int16, "position": np.int32, "pscore": np.float64, "model_version": np.int32,
    "click": np.bool_, "play": np.bool_, "quality_play": np.bool_, "minutes": np.float32,
    "reward": np.bool_, "expected_take": np.float32, "uniform_take": np.float32,
    "oracle_take": np.float32,
}
#: Session columns, logged only by response models that simulate sessions (all or none per log).
SESSION_COLUMNS = {"looked": np.bool_, "look_second": np.float32, "click_second": np.float32,
                   "play_second": np.float32}
#: Pipeline columns, logged only when engine.faults is on (sim.pipeline; all or none per log).
PIPELINE_COLUMNS = {"impression_id": np.int64, "rendered": np.bool_, "fallback": np.bool_}
#: Columns present in some logs only.
OPTIONAL_COLUMNS = {**SESSION_COLUMNS, **PIPELINE_COLUMNS}
#: Per-visit session columns of the visit log (same rule).
VISIT_SESSION_COLUMNS = {"session_seconds": np.float32, "end_reason": np.int8, "looks": np.int16,
                         "detail_views": np.int16, "plays": np.int16, "first_play_second": np.float32}
#: Visit ids in batched mode: ((window * n_blocks + block) << VISIT_ID_BITS) + i, so that any
#: shard can number its visits without knowing how many visits other blocks had, and the batch
#: (window, block) of a row is ``visit >> VISIT_ID_BITS``.
VISIT_ID_BITS = 24


def visit_ids(batch: int, n: int, where: str, remedy: str) -> np.ndarray:
    """Ids (n,) int64 of the ``n`` visits of batch ``batch``: ``(batch << VISIT_ID_BITS) + i``.

    More visits than ids would spill into the next batch's ids (and break the log order the
    reader restores), so that is an error naming the batch (``where``) and the ``remedy``."""
    if n > 1 << VISIT_ID_BITS:
        raise RuntimeError(f"{n:,} visits {where}: more than {1 << VISIT_ID_BITS:,} ({remedy})")
    return (batch << VISIT_ID_BITS) + np.arange(n, dtype=np.int64)


#: Columns whose values rarely repeat (not dictionary-encoded in Parquet).
CONTINUOUS_COLUMNS = frozenset({"time", "visit", "impression_id", "pscore", "minutes", "expected_take", "uniform_take",
                                "oracle_take", "context", "look_second", "click_second", "play_second",
                                "session_seconds", "first_play_second"})
#: Columns that follow log order within a part (visit ids ascend batch by batch, times window by
#: window): the only ones written with Parquet min/max statistics.
ORDERED_COLUMNS = ("time", "visit")
#: String columns constant within one append (one cell, one policy), stored as dictionaries.
LABEL_COLUMNS = ("cell", "policy")


def arrow_array(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """An Arrow array over a 1-D NumPy array of numbers or booleans (n,), rows where ``null``
    (n,) bool is true written as null.

    The same array as ``pa.array(values, mask=null)``, built from the buffers: ``pa.array``
    imports pandas to check its argument's type (half a second of start-up for every process
    that logs, and the writers need nothing else of pandas). What ``pa.array`` would refuse
    (several dimensions, byte-swapped or non-numeric values, a mask that is not one bool per
    row) is refused here too, not written as garbage."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or not values.dtype.isnative or values.dtype.kind not in "biuf":
        raise TypeError(f"arrow_array needs a 1-D array of native-order numbers or booleans, "
                        f"got shape {values.shape} dtype {values.dtype.str}")
    if null is not None and (null.dtype != np.bool_ or null.shape != values.shape):
        raise TypeError(f"arrow_array: null must be bool of shape {values.shape}, got {null.dtype} {null.shape}")
    n = values.size
    validity = None if null is None or not null.any() else pa.py_buffer(np.packbits(~null, bitorder="little"))
    nulls = 0 if validity is None else int(null.sum())
    if values.dtype == np.bool_:            # Arrow packs booleans into bits
        return pa.Array.from_buffers(pa.bool_(), n, [validity, pa.py_buffer(np.packbits(values, bitorder="little"))],
                                     null_count=nulls)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), n, [validity, pa.py_buffer(values)],
                                 null_count=nulls)


def nan_as_null(values: np.ndarray) -> pa.Array:
    """A column with NaN ("did not happen") as null: equal to itself, and NaN again in pandas."""
    return arrow_array(values, np.isnan(values) if values.dtype.kind == "f" else None)


def string_array(values: list[str]) -> pa.Array:
    """An Arrow string array (see :func:`arrow_array`: no pandas)."""
    data = [v.encode() for v in values]
    offsets = np.r_[0, np.cumsum([len(b) for b in data])].astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


class PartWriter:
    """Numbered Parquet part files in one directory, each written to a hidden ``.*.tmp`` file and
    renamed when complete, so a killed run never leaves a truncated file that looks valid, and
    what it leaves does not break reading the directory (Parquet readers skip names that start
    with ``.``).

    A writer touches the disk only when it writes a part or closes (the directory then exists
    even if nothing was logged), so it can be built, and handed to the simulation, before the
    run directory is prepared."""

    directory: Path
    prefix: str             # the writer's shard, in the file names: "00004-" (see the module doc)
    _part: int
    rows_written: int

    def part_name(self, i: int) -> str:
        return f"part-{self.prefix}{i:05d}.parquet"

    def part_names(self) -> list[str]:
        """The file names of the parts written so far."""
        return [self.part_name(i) for i in range(self._part)]

    @staticmethod
    def temporary(final: Path) -> Path:
        """Where the part ``final`` is written before it is complete."""
        return final.with_name(f".{final.name}.tmp")

    def _write_part(self, table: pa.Table) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / self.part_name(self._part)
        tmp = self.temporary(final)
        # Dictionary-encode only columns with few distinct values: trying it on continuous
        # columns (times, probabilities) costs 40 % of the write time and saves nothing.
        # Min/max statistics only for the columns that follow log order (visit ids ascend batch by
        # batch, times window by window): the only ones whose ranges let a reader skip a part or
        # row group.
        # The other columns' statistics cost about 15 % of the write time.
        pq.write_table(table, tmp, compression="snappy",
                       use_dictionary=[c for c in table.column_names if c not in CONTINUOUS_COLUMNS],
                       write_statistics=[c for c in ORDERED_COLUMNS if c in table.column_names])
        os.replace(tmp, final)
        self._part += 1
        self.rows_written += table.num_rows


class ImpressionLog(PartWriter):
    """Buffers impression columns as NumPy arrays and writes a Parquet part file every
    ``chunk_rows`` rows.

    Parts are written as hidden ``.*.parquet.tmp`` files and renamed when complete, so a killed
    run never leaves a truncated file that looks valid.
    """

    def __init__(self, directory: Path | str, chunk_rows: int = 500_000, prefix: str = ""):
        self.directory = Path(directory)
        self.prefix = prefix
        self.chunk_rows = int(chunk_rows)
        self._columns: dict[str, list[np.ndarray]] = {k: [] for k in {**NUMERIC_COLUMNS, **OPTIONAL_COLUMNS}}
        self._labels: dict[str, list[tuple[str, int]]] = {k: [] for k in LABEL_COLUMNS}
        self._buffered = 0
        self._part = 0
        self.rows_written = 0

    def append(self, columns: dict) -> None:
        """Append one batch: numeric columns of shape (n,), label columns as one string."""
        n = len(columns["time"])
        if n == 0:
            return
        for k, dtype in NUMERIC_COLUMNS.items():
            self._columns[k].append(np.asarray(columns[k], dtype=dtype))
        for k, dtype in OPTIONAL_COLUMNS.items():
            if k in columns:
                self._columns[k].append(np.asarray(columns[k], dtype=dtype))
        for k in LABEL_COLUMNS:
            self._labels[k].append((str(columns[k]), n))
        self._buffered += n
        if self._buffered >= self.chunk_rows:
            self.flush()

    def _label_array(self, runs: list[tuple[str, int]]) -> pa.Array:
        values = sorted({v for v, _ in runs})
        code = {v: i for i, v in enumerate(values)}
        indices = np.repeat([code[v] for v, _ in runs], [n for _, n in runs]).astype(np.int32)
        return pa.DictionaryArray.from_arrays(arrow_array(indices), string_array(values))

    def flush(self) -> None:
        if self._buffered == 0:     # (at close) an empty dataset is still a directory
            self.directory.mkdir(parents=True, exist_ok=True)
            return
        session = [k for k in OPTIONAL_COLUMNS if self._columns[k]]
        if any(sum(c.size for c in self._columns[k]) != self._buffered for k in session):
            raise ValueError("session (or pipeline) columns must be given with every batch of a log or with none")
        names = list(NUMERIC_COLUMNS) + list(LABEL_COLUMNS) + session
        arrays = [arrow_array(np.concatenate(self._columns[k])) for k in NUMERIC_COLUMNS]
        arrays += [self._label_array(self._labels[k]) for k in LABEL_COLUMNS]
        arrays += [nan_as_null(np.concatenate(self._columns[k])) for k in session]
        table = pa.Table.from_arrays(arrays, names=names)
        self._columns = {k: [] for k in {**NUMERIC_COLUMNS, **OPTIONAL_COLUMNS}}
        self._labels = {k: [] for k in LABEL_COLUMNS}
        self._buffered = 0
        self._write_part(table)

    def close(self) -> None:
        self.flush()


class VisitLog(PartWriter):
    """Per-visit context rows (``visit, member, time, context``), Parquet parts like
    :class:`ImpressionLog`. The file metadata names the context columns."""

    def __init__(self, directory: Path | str, context_names: list[str], chunk_rows: int = 200_000,
                 prefix: str = ""):
        self.directory = Path(directory)
        self.prefix = prefix
        self.names = list(context_names)
        self.chunk_rows = int(chunk_rows)
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._buffered = 0
        self._part = 0
        self.rows_written = 0

    def append(self, visit: np.ndarray, member: np.ndarray, time: np.ndarray,
               context: np.ndarray, session: dict | None = None) -> None:
        """Append v visits; ``context`` has shape (v, len(context_names)); ``session``: the
        :data:`VISIT_SESSION_COLUMNS` (v,) of a session model, or None / empty."""
        if visit.size == 0:
            return
        extra = tuple(np.asarray(session[k], dtype=t) for k, t in VISIT_SESSION_COLUMNS.items()) if session else ()
        self._parts.append((visit.astype(np.int64), member.astype(np.int32), time.astype(np.float64),
                            context.astype(np.float32), *extra))
        self._buffered += visit.size
        if self._buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self._buffered == 0:     # (at close) an empty dataset is still a directory
            self.directory.mkdir(parents=True, exist_ok=True)
            return
        if len({len(p) for p in self._parts}) != 1:
            raise ValueError("session columns must be given with every batch of a visit log or with none")
        visit, member, time, ctx, *extra = (np.concatenate(c) for c in zip(*self._parts))
        self._parts, self._buffered = [], 0
        d = ctx.shape[1]
        context = pa.FixedSizeListArray.from_arrays(arrow_array(ctx.reshape(-1)), d)
        table = pa.Table.from_arrays([arrow_array(visit), arrow_array(member), arrow_array(time), context]
                                     + [nan_as_null(x) for x in extra],
                                     names=["visit", "member", "time", "context"]
                                     + list(VISIT_SESSION_COLUMNS)[:len(extra)])
        table = table.replace_schema_metadata({"context_names": ",".join(self.names)})
        self._write_part(table)

    def close(self) -> None:
        self.flush()


@dataclass(frozen=True)
class LogTarget:
    """Where a run's logs go; every shard opens its own writers there (:meth:`open`), in its own
    process, so rows never pass through the driver.

    ``impressions`` / ``visits``: the directories of the impression and visit-context datasets
    (None: not logged), absolute (a worker process or Ray actor may run elsewhere); ``context_names``
    name the visit log's context columns; ``chunk_rows``: rows per impression part file."""

    impressions: Path | None
    visits: Path | None = None
    context_names: tuple[str, ...] = ()
    chunk_rows: int = 500_000

    def __post_init__(self):
        for name in ("impressions", "visits"):      # a worker's working directory may differ
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).absolute())

    @classmethod
    def for_run(cls, out: Path | str, context_names, chunk_rows: int) -> "LogTarget":
        """The logs of run directory ``out``: ``logs/`` and ``visit_context/``."""
        out = Path(out)
        return cls(out / "logs", out / "visit_context", tuple(context_names), int(chunk_rows))

    def open(self, first_block: int) -> tuple[ImpressionLog | None, VisitLog | None]:
        """The writers of the shard whose blocks start at ``first_block``."""
        prefix = f"{first_block:05d}-"
        return (None if self.impressions is None else ImpressionLog(self.impressions, self.chunk_rows, prefix),
                None if self.visits is None else VisitLog(self.visits, list(self.context_names), prefix=prefix))


def _parts(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


def _sharded(parts: list[Path]) -> bool:
    """Whether ``parts`` (file names ``part-<shard>-<n>.parquet``) come from more than one shard."""
    return len({p.name.split("-")[1] for p in parts if p.name.count("-") == 2}) > 1


def _in_log_order(frame, parts: list[Path]):
    """``frame`` (the rows of ``parts`` in file order, with a ``visit`` column) in log order: a
    stable sort by the batch each visit id encodes when the parts come from several shards (one
    shard writes its batches in order)."""
    if not _sharded(parts):
        return frame
    order = np.argsort(frame["visit"].to_numpy() >> VISIT_ID_BITS, kind="stable")
    return frame.take(order).reset_index(drop=True)


def read_visit_log(source: Path | str, columns: list[str] | None = None):
    """The visit-context log of a run (``visit_context/``, the directory itself or one part file)
    as a pandas DataFrame in log order, with ``columns`` (default: all). FileNotFoundError when
    there is none."""
    import pandas as pd

    source = Path(source)
    path = source / "visit_context" if (source / "visit_context").is_dir() else source
    parts = _parts(path) if path.is_dir() else [path] if path.is_file() else []
    if not parts:
        raise FileNotFoundError(f"no visit-context log at {path}")
    wanted = None if columns is None else list(columns)
    extra = ["visit"] if wanted is not None and "visit" not in wanted and _sharded(parts) else []
    frame = _in_log_order(pd.read_parquet(path, columns=None if wanted is None else wanted + extra), parts)
    return frame.drop(columns=extra) if extra else frame


def read_impressions(source: Path | str, columns: list[str] | None = None, *, cell: str | None = None,
                     time_order: bool = False):
    """The impression log of a run as a pandas DataFrame: the one reader of it.

    Parameters
    ----------
    source : a run directory, its ``logs`` directory, or one Parquet part file
    columns : the columns to read (default: all, in the order of :data:`NUMERIC_COLUMNS` and
        :data:`LABEL_COLUMNS`); the frame holds exactly these, in this order
    cell : keep only the rows of this cell (a ValueError names the cells of the log otherwise)
    time_order : sort the rows by ``time`` (stable, so file order breaks ties) and renumber them

    Returns
    -------
    DataFrame, one row per impression. ``cell`` and ``policy`` are categoricals:
    ``log["cell"].to_numpy()`` gives the names, ``.cat.codes`` / ``.cat.categories`` integer
    codes and the names they index.

    Raises FileNotFoundError when there is no log (e.g. the run had ``log_impressions`` off).
    """
    import pandas as pd   # only readers need pandas; the engine's writers do not

    source = Path(source)
    path = source / "logs" if (source / "logs").is_dir() else source
    parts = _parts(path) if path.is_dir() else [path]
    if not path.exists() or not parts:
        raise FileNotFoundError(f"no impression log at {path}")
    wanted = None if columns is None else list(columns)
    extra = [c for c in (["cell"] if cell is not None else []) + (["time"] if time_order else [])
             + (["visit"] if _sharded(parts) else []) if wanted is not None and c not in wanted]
    log = _in_log_order(pd.read_parquet(path, columns=None if wanted is None else wanted + extra), parts)
    if cell is not None:
        cells = sorted(map(str, log["cell"].unique())) if "cell" in log else []
        if cell not in cells:
            raise ValueError(f"cell {cell!r} is not in the log; cells: {', '.join(cells) or '(none)'}")
        log = log[log["cell"].astype(str) == cell]
    if time_order:
        log = log.sort_values("time", kind="stable").reset_index(drop=True)
    return log.drop(columns=extra) if extra else log
