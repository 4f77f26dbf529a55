"""The README's code blocks, read as printed, so the tests exercise exactly what a reader copies."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(marker: str, language: str = "python") -> str:
    """The one ```language block of README.md that contains ``marker``; fails if there is none."""
    blocks = [b for b in re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
              if marker in b]
    assert len(blocks) == 1, f"README.md should have exactly one {language} block with {marker!r}, has {len(blocks)}"
    return blocks[0]
