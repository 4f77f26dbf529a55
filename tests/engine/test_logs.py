"""The log writers build Arrow arrays from NumPy buffers: the same arrays ``pa.array`` builds,
without importing pandas in every process that logs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from sim.logs import arrow_array, nan_as_null, string_array
from tests.conftest import REPO


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_arrow_array_equals_pa_array(dtype):
    values = (np.random.default_rng(0).random(37) * 100).astype(dtype)   # 37: not a whole byte of bits
    got, want = arrow_array(values), pa.array(values)
    assert got.type == want.type and got.equals(want)
    null = np.arange(37) % 3 == 0
    assert arrow_array(values, null).equals(pa.array(values, mask=null))
    assert arrow_array(values, null).null_count == null.sum()


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
