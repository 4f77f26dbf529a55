"""Shared checks of the reliability battery (tests/cli/test_reliability*.py): a refusal is one
line naming the key or column and the value, no traceback; a directory is byte-for-byte what it
was; no process carrying a marker is left running."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.conftest import tiny_world


def base_config(**engine) -> dict:
    """A valid one-cell config on a world that builds in milliseconds (a few seconds to run)."""
    return {"seed": 0,
            "world": tiny_world(n_members=30, n_titles=8, artworks_max=3, history_length=4),
            "engine": {"days": 0.05, "progress": False, "retrain_hours": 0.5,
                       "ranker_retrain_hours": 1.0, "window_minutes": 5.0, **engine},
            "ranker": {"name": "popularity", "rows": 2, "columns": 3},
            "experiment": {"name": "rel", "cells": [{"name": "a", "share": 1.0,
                                                    "policy": {"name": "thompson"}}]}}


def assert_one_line(message: str, *needles: object) -> None:
    """A clean refusal: one non-empty line, no traceback, naming every needle."""
    text = str(message).strip()
    assert text, "empty message"
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, f"not one line:\n{text}"
    for n in needles:
        assert str(n) in text, f"{n!r} not in {text!r}"


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of content (``dir`` for directories, ``->target`` for links)."""
    out = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "->" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose environment holds ``marker``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker.encode() not in (d / "environ").read_bytes():
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(d.name))
    return found
