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


# ---- every block, and the commands of the shell blocks ------------------------------------------
def readme_blocks(language: str, text: str | None = None) -> list[tuple[int, str]]:
    """Every fenced block of ``language`` ("" for blocks without one), also when indented under a
    list item, as (line, text) with the indentation removed; ``line`` is the 1-based line of the
    opening fence."""
    text = README.read_text() if text is None else text
    out, open_at, indent, lang, body = [], None, 0, "", []
    for i, line in enumerate(text.splitlines()):
        stripped = line.lstrip(" ")
        if open_at is None and stripped.startswith("```"):
            open_at, indent, lang, body = i + 1, len(line) - len(stripped), stripped[3:].strip(), []
        elif open_at is not None and stripped.rstrip() == "```":
            if lang == language:
                out.append((open_at, "".join(b + "\n" for b in body)))
            open_at = None
        elif open_at is not None:
            body.append(line[indent:] if line[:indent].isspace() else line)
    return out


def readme_transcripts(text: str | None = None) -> list[tuple[int, str, str]]:
    """Commands shown with their output in plain fenced blocks (``$ python -m ...`` then the
    output), as (line, command, first line of the output)."""
    out = []
    for line0, body in readme_blocks("", text):
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ python -m ") and i + 1 < len(lines):
                out.append((line0 + 1 + i, line[2:], lines[i + 1].strip()))
    return out


def _indented_blocks(text: str) -> list[tuple[int, str]]:
    """Markdown code blocks indented by four spaces after a blank line, as (line, text)."""
    out = []
    for m in re.finditer(r"(?<=\n\n)((?: {4}\S.*\n)+)", text):
        out.append((text.count("\n", 0, m.start()) + 1 - 1,
                    "".join(line[4:] + "\n" for line in m.group(1).splitlines())))
    return out


def readme_commands(text: str | None = None) -> list[tuple[int, str]]:
    """Every command of the README, as (line, command): the ``bash`` blocks, the ``python -m``
    lines of plain fenced blocks (``$ `` prompts removed) and of indented code blocks.
    Continuation lines are joined, comment lines dropped, ``a && b`` kept as one command (the
    runner splits it)."""
    text = README.read_text() if text is None else text
    blocks = readme_blocks("bash", text)
    for line0, body in readme_blocks("", text) + _indented_blocks(text):
        keep = [ln[2:] if ln.startswith("$ python -m ") else ln if ln.startswith("python -m ") else ""
                for ln in body.splitlines()]
        if any(keep):
            blocks.append((line0, "\n".join(keep)))
    out = []
    for line0, body in sorted(blocks):
        pending, start = "", 0
        for i, line in enumerate(body.splitlines()):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if not pending:
                start = line0 + 1 + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, " ".join((pending + line).split())))
            pending = ""
    return out
