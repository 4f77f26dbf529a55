"""Every command of README.md runs, at a tiny size, in one subprocess (tests/readme_runner.py:
what "tiny" means, which placeholders are filled, and which commands are not run and why)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.readme_examples import readme_commands, readme_transcripts
from tests.readme_runner import KNOWN_BROKEN, NOT_RUN, TINY, TINY_STATUS


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "tests.readme_runner", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"README commands: {len(readme_commands())}, CPU {cpu:.1f} s")
    return json.loads((out / "results.json").read_text())


def expected_status(result: dict) -> int:
    """0, or the status TINY_STATUS allows for this argv (whose output must then hold its text)."""
    line = " ".join(result["argv"])
    for prefix, (status, text, _) in TINY_STATUS.items():
        if line.startswith(prefix) and text in result["output"]:
            return status
    return 0


def broken(command: str) -> str | None:
    return next((why for prefix, why in KNOWN_BROKEN.items() if command.startswith(prefix)), None)


@pytest.mark.slow
def test_every_readme_command_runs_at_a_tiny_size(results):
    shown = {c for _, c, _ in readme_transcripts()}
    ran = [r for r in results if "status" in r]
    assert len(ran) >= 25
    failed = [f"README.md:{r['line']}: {' '.join(r['argv'])}\n{r['output'][-1500:]}" for r in ran
              if r["status"] != expected_status(r) and r["command"] not in shown and not broken(r["command"])]
    assert not failed, "\n\n".join(failed)
    # A command listed as broken that works now: take it off KNOWN_BROKEN.
    fixed = [r["command"] for r in ran if broken(r["command"]) and r["status"] == 0]
    assert not fixed, fixed


@pytest.mark.slow
def test_commands_shown_with_their_output_print_it(results):
    for line, command, first_output in readme_transcripts():
        r = next(r for r in results if r["command"] == command)
        assert r["status"] != 0 and first_output.rstrip(".").rstrip() in r["output"], (line, r["output"])


def test_every_exemption_names_a_readme_command():
    commands = [c for _, c in readme_commands()]
    for prefix in {**NOT_RUN, **KNOWN_BROKEN}:
        assert any(c.startswith(prefix) for c in commands), f"stale exemption: {prefix}"
    for prefix in TINY_STATUS:                  # also the second half of `a && b`
        assert any(prefix in c for c in commands), f"stale exemption: {prefix}"


def test_readme_states_the_tiny_size_the_runner_uses():
    """README, "The README is tested", quotes the overrides the runner appends."""
    text = " ".join((REPO / "README.md").read_text().split())
    assert f"`{' '.join(TINY)}` appended" in text
