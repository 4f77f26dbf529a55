"""Checks on logged bandit feedback: a malformed log is refused, never silently repaired.

Every refusal is a :class:`LogValidationError` that names the column, how many rows are bad and
the first bad row, e.g.::

    column 'propensity_score': 3 of 1,000 rows are outside (0, 1] (first: row 17, value 0.0);
    a propensity is the logging policy's probability of the logged action

Rows are numbered from 0 in file order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


class LogValidationError(ValueError):
    """A logged-feedback column that cannot be used as is.

    Attributes: ``column`` (name), ``n_bad`` (rows that fail), ``n_rows``.
    """

    def __init__(self, column: str, n_bad: int, n_rows: int, problem: str, first: str = "",
                 hint: str = ""):
        self.column, self.n_bad, self.n_rows = column, int(n_bad), int(n_rows)
        where = f" ({first})" if first else ""
        msg = f"column {column!r}: {self.n_bad:,} of {self.n_rows:,} rows {problem}{where}"
        super().__init__(msg + (f"; {hint}" if hint else ""))


def require_columns(df: pd.DataFrame, columns: list[str], layout: str) -> None:
    """Refuse a log that lacks any of ``columns`` (all missing ones are named)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        # Every row lacks the column: n_bad = n_rows.
        raise LogValidationError(
            missing[0], len(df), len(df), "lack it: the column is absent",
            hint=(f"the {layout} layout needs {', '.join(columns)}; missing: "
                  f"{', '.join(missing)}; found: {', '.join(map(str, df.columns))}"))


def _first(mask: np.ndarray, values) -> str:
    i = int(np.flatnonzero(mask)[0])
    value = values[i]
    value = value.item() if isinstance(value, np.generic) else value   # 0.0, not np.float64(0.0)
    return f"first: row {i}, value {value!r}"


def numeric_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64; refuse empty cells, NaNs and text that is not a number."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise LogValidationError(column, bad.sum(), len(df), "are missing, NaN or not a finite number",
                                 _first(bad, raw.to_numpy()))
    return values


def integer_column(df: pd.DataFrame, column: str, minimum: int, hint: str = "") -> np.ndarray:
    """Whole numbers >= ``minimum`` as int64."""
    values = numeric_column(df, column)
    frac = values != np.round(values)
    if frac.any():
        raise LogValidationError(column, frac.sum(), len(df), "are not whole numbers",
                                 _first(frac, values), hint)
    low = values < minimum
    if low.any():
        raise LogValidationError(column, low.sum(), len(df), f"are below {minimum}",
                                 _first(low, values), hint)
    return values.astype(np.int64)


def propensity_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """Propensities in (0, 1]."""
    values = numeric_column(df, column)
    bad = ~((values > 0) & (values <= 1))
    if bad.any():
        raise LogValidationError(column, bad.sum(), len(df), "are outside (0, 1]", _first(bad, values),
                                 "a propensity is the logging policy's probability of the logged "
                                 "action; rows with propensity 0 cannot have been logged")
    return values


def check_no_missing(df: pd.DataFrame, columns: list[str]) -> None:
    """Refuse empty cells in non-numeric columns (e.g. hashed user features)."""
    for c in columns:
        bad = df[c].isna().to_numpy()
        if bad.any():
            raise LogValidationError(c, bad.sum(), len(df), "are missing (empty or NaN)",
                                     _first(bad, df[c].to_numpy()))
