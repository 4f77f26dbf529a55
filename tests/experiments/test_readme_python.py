"""Every Python block of README.md runs as printed: here, or in the test that reads it by marker
(``readme_block(marker)``, e.g. tests/policies/test_custom_policy.py). Blocks that import a
README example module (``from my_estimators import ...``) run next to the example files, as the
README says ("run from the directory holding it")."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from tests.readme_examples import readme_blocks

TESTS = Path(__file__).resolve().parent.parent
#: Blocks that are excerpts, not programs (first line -> why they are not run).
EXCERPTS = {
    'days: float = param(14.0': "one field of EngineConfig, shown in place (the dataclass is sim/config.py)",
    "from sim.logs import read_impressions": "a sketch: `run_dir` and `probs = ...` are left to the reader "
                                             "(tests/ope/test_slate.py runs the same calls)",
}


def markers_read_elsewhere() -> set[str]:
    """Markers other tests pass to ``readme_block`` (they run those blocks)."""
    found = set()
    for path in TESTS.rglob("test_*.py"):
        found |= set(re.findall(r'readme_block\("([^"]+)"\)', path.read_text()))
    return found


def blocks_run_here() -> list[tuple[int, str]]:
    elsewhere = markers_read_elsewhere()
    return [(line, body) for line, body in readme_blocks("python")
            if not any(m in body for m in elsewhere) and not any(body.startswith(e) for e in EXCERPTS)]


def test_every_python_block_is_run_somewhere_or_is_a_named_excerpt():
    blocks = readme_blocks("python")
    assert len(blocks) >= 10
    for prefix in EXCERPTS:        # no stale exemption
        assert sum(b.startswith(prefix) for _, b in blocks) == 1, prefix
    elsewhere = markers_read_elsewhere()
    covered = [b for _, b in blocks if any(m in b for m in elsewhere)]
    assert len(covered) + len(blocks_run_here()) + len(EXCERPTS) == len(blocks)


@pytest.fixture
def example_dir(tmp_path, monkeypatch):
    """A directory holding the README's example modules (``# my_*.py`` blocks), on sys.path."""
    for _, body in readme_blocks("python"):
        m = re.fullmatch(r"# (\S+\.py)", body.splitlines()[0].strip())
        if m:
            (tmp_path / m.group(1)).write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("my_")]:
        del sys.modules[name]


@pytest.mark.parametrize("line, body", blocks_run_here(), ids=lambda v: f"README.md:{v}" if isinstance(v, int) else "")
def test_python_block_runs_as_printed(line, body, example_dir, monkeypatch):
    # A module of its own (dataclasses look their module up in sys.modules), as `python block.py` would.
    module = types.ModuleType(f"readme_line_{line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(body, f"README.md:{line}", "exec"), module.__dict__)
