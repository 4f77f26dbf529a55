"""The log writers build Arrow arrays from NumPy buffers: the same arrays ``pa.array`` builds,
without importing pandas in every process that logs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sim.logs import arrow_array, nan_as_null, string_array
from tests.conftest import REPO


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_arrow_array_equals_pa_array(dtype):
    rng = np.random.default_rng(0)
    values = rng.random(37) < 0.4 if dtype == np.bool_ else (rng.random(37) * 100).astype(dtype)
    got, want = arrow_array(values), pa.array(values)            # 37 rows: not a whole byte of bits
    assert got.type == want.type and got.equals(want)
    null = np.arange(37) % 3 == 0
    assert arrow_array(values, null).equals(pa.array(values, mask=null))
    assert arrow_array(values, null).null_count == null.sum()
    assert arrow_array(values[::2]).equals(pa.array(values[::2]))          # a strided view
    assert arrow_array(values[:0]).equals(pa.array(values[:0]))            # no rows


def test_arrow_array_refuses_what_pa_array_refuses():
    with pytest.raises(TypeError, match="1-D"):
        arrow_array(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="native"):
        arrow_array(np.arange(4, dtype=">i4"))
    with pytest.raises(TypeError, match="null must be bool"):
        arrow_array(np.arange(4), np.array([0, 1, 0, 0]))
    with pytest.raises(TypeError, match="null must be bool"):
        arrow_array(np.arange(4), np.zeros(3, bool))


def test_parquet_written_from_the_buffers_is_byte_identical_to_pa_array(tmp_path):
    """The log's columns, as the writers build them, against pa.array's: same Parquet bytes."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n = 1000
    columns = {"time": rng.random(n) * 1440, "member": rng.integers(0, 50, n).astype(np.int32),
               "click": rng.random(n) < 0.1, "look_second": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
               "end_reason": rng.integers(0, 4, n).astype(np.int8)}
    labels = np.repeat(np.array([1, 0], np.int32), [n // 2, n - n // 2])
    ours = pa.Table.from_arrays([nan_as_null(v) for v in columns.values()]
                                + [pa.DictionaryArray.from_arrays(arrow_array(labels), string_array(["a", "thompson"]))],
                                names=[*columns, "cell"])
    theirs = pa.Table.from_arrays([pa.array(v, from_pandas=True) for v in columns.values()]
                                  + [pa.DictionaryArray.from_arrays(labels, ["a", "thompson"])],
                                  names=[*columns, "cell"])
    pq.write_table(ours, tmp_path / "ours.parquet", compression="snappy")
    pq.write_table(theirs, tmp_path / "theirs.parquet", compression="snappy")
    assert (tmp_path / "ours.parquet").read_bytes() == (tmp_path / "theirs.parquet").read_bytes()


def test_nan_is_written_as_null_as_pandas_conversion_does():
    values = np.array([1.5, np.nan, 3.0, np.nan], np.float32)
    got = nan_as_null(values)
    assert got.equals(pa.array(values, from_pandas=True)) and got.null_count == 2
    counts = np.array([1, 0, 2], np.int16)               # integers have no NaN: nothing is null
    assert nan_as_null(counts).equals(pa.array(counts)) and nan_as_null(counts).null_count == 0


def test_string_array_equals_pa_array():
    values = ["thompson", "", "é-policy", "lints"]
    assert string_array(values).equals(pa.array(values))


def test_a_process_that_writes_logs_does_not_import_pandas(tmp_path):
    code = f"""
import sys
import numpy as np
from sim.logs import NUMERIC_COLUMNS, SESSION_COLUMNS, VISIT_SESSION_COLUMNS, ImpressionLog, VisitLog
n = 5
log = ImpressionLog({str(tmp_path / "logs")!r}, chunk_rows=3)
columns = {{k: np.zeros(n, dtype) for k, dtype in {{**NUMERIC_COLUMNS, **SESSION_COLUMNS}}.items()}}
columns["look_second"][1] = np.nan
log.append({{**columns, "cell": "a", "policy": "thompson"}})
log.close()
visits = VisitLog({str(tmp_path / "visits")!r}, ["x", "y"])
session = {{k: np.full(n, np.nan if np.dtype(t).kind == "f" else 1, t) for k, t in VISIT_SESSION_COLUMNS.items()}}
visits.append(np.arange(n), np.arange(n), np.zeros(n), np.zeros((n, 2), np.float32), session)
visits.close()
assert log.rows_written == n
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "logs")
    assert len(frame) == 5 and frame["look_second"].isna().tolist() == [False, True, False, False, False]
    visits = pd.read_parquet(tmp_path / "visits")
    assert visits["session_seconds"].isna().all() and (visits["looks"] == 1).all()


def test_only_the_columns_in_log_order_carry_parquet_statistics(tmp_path):
    """A reader can skip a part by time or visit id (their min/max are written, and right);
    the other columns, unordered, are written without statistics."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from sim.logs import NUMERIC_COLUMNS, ImpressionLog, VisitLog

    log = ImpressionLog(tmp_path / "logs", chunk_rows=4)
    for batch in range(3):
        columns = {k: np.full(4, 7, dtype) for k, dtype in NUMERIC_COLUMNS.items()}
        columns["time"] = 10.0 * batch + np.arange(4)
        columns["visit"] = 100 * batch + np.arange(4)
        log.append({**columns, "cell": "a", "policy": "thompson"})
    log.close()
    visits = VisitLog(tmp_path / "visits", ["x"])
    visits.append(np.arange(5), np.arange(5), np.arange(5.0), np.zeros((5, 1), np.float32))
    visits.close()
    for directory in ("logs", "visits"):
        for part in sorted((tmp_path / directory).glob("part-*.parquet")):
            chunk = pq.read_metadata(part).row_group(0)
            columns = {chunk.column(i).path_in_schema: chunk.column(i) for i in range(chunk.num_columns)}
            assert {name for name, c in columns.items() if c.is_stats_set} == {"time", "visit"}, part
            data = pq.read_table(part)
            for name in ("time", "visit"):
                stats = columns[name].statistics
                assert (stats.min, stats.max) == (min(data[name].to_pylist()), max(data[name].to_pylist()))
    # A time filter, checked against each row group's statistics, keeps only the last part's.
    dataset = ds.dataset(tmp_path / "logs", format="parquet")
    fragments = list(dataset.get_fragments())
    assert len(fragments) == 3
    kept = [f for f in fragments for _ in f.split_by_row_group(filter=ds.field("time") >= 20.0)]
    assert len(kept) == 1 and kept[0].path.endswith("part-00002.parquet")


def test_an_interrupted_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while a file is written through its temporary name: neither
    the file nor the temporary one is left."""
    import sim.outputs
    from sim.outputs import atomic_savefig, atomic_write_text

    class Figure:
        def savefig(self, path, **kwargs):
            Path(path).write_bytes(b"half a PNG")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_savefig(Figure(), tmp_path / "chart.png")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.outputs.os, "fsync", interrupted)     # the text is written, not yet renamed
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "a.txt", "text")
    assert list(tmp_path.iterdir()) == []
