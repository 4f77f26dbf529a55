"""Finished units of a long analysis, kept on disk so that a killed analysis resumes.

    store = UnitStore(out / "units", settings)        # settings: anything with a stable repr
    rows = store.get("uniform-seed0")                 # None if not finished (or other settings)
    if rows is None:
        rows = compute(...)
        store.put("uniform-seed0", rows)

A unit is written to a temporary name and renamed (:func:`sim.outputs.tmp_name`), so a kill
leaves whole units or none; its file name carries a hash of the settings, so a re-run with other
settings never reuses it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

from sim.outputs import tmp_name


class UnitStore:
    def __init__(self, directory: Path | str, settings: Any):
        self.directory = Path(directory)
        self.key = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]

    def _path(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return self.directory / f"{safe}.{self.key}.pkl"

    def get(self, name: str) -> Any | None:
        try:
            with open(self._path(name), "rb") as fh:
                return pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    def put(self, name: str, value: Any) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(path)
        with open(tmp, "wb") as fh:
            pickle.dump(value, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
