"""Progress output: plain lines every N simulated hours in a log, a redrawn bar on a terminal."""
from __future__ import annotations

import io
import re

from sim.progress import line_every_hours, make_progress
from sim.runner import run_experiment
from tests.conftest import tiny_config


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_one_plain_line_per_interval_not_a_redrawn_bar():
    out = io.StringIO()
    update, close = make_progress(48 * 60, True, stream=out, every_hours=6)
    for minute in range(0, 48 * 60 + 1, 20):      # 145 serving steps of 20 minutes
        update(float(minute), minute * 100)
    update(48 * 60.0, 288_000)                    # the engine's last call, again at the horizon
    close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 8, lines                 # hours 6, 12, ..., 48: one line each
    hours = [int(re.search(r"progress:\s+(\d+)/48 sim-h", line).group(1)) for line in lines]
    assert hours == [6, 12, 18, 24, 30, 36, 42, 48]
    assert all("impressions/s" in line and "ETA" in line for line in lines)
    assert "(100%)" in lines[-1] and "ETA 0:00" in lines[-1]


def test_a_step_crossing_several_marks_prints_one_line():
    out = io.StringIO()
    update, _ = make_progress(24 * 60, True, stream=out, every_hours=1)
    update(5 * 60.0, 10)
    update(24 * 60.0, 20)
    assert len(out.getvalue().splitlines()) == 2


def test_default_spacing_keeps_a_log_short():
    assert line_every_hours(24) == 2                # 12 lines for a day
    assert line_every_hours(14 * 24) == 24          # 14 lines for the default two weeks
    assert 365 * 24 / line_every_hours(365 * 24) <= 20


def test_terminal_gets_the_bar():
    term = FakeTerminal()
    update, close = make_progress(10 * 60, True, stream=term)
    for minute in range(0, 601, 60):
        update(float(minute), minute)
    close()
    assert "\r" in term.getvalue() and "sim-h" in term.getvalue()   # tqdm redraws in place


def test_disabled_prints_nothing():
    update, close = make_progress(600, False)
    assert update is None
    close()


def test_a_run_writing_to_a_pipe_prints_plain_lines(tmp_path, capsys):
    config = tiny_config(["uniform"])
    config["engine"].update(progress=True, days=0.5)
    run_experiment(config, tmp_path / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("progress:")]
    assert "\r" not in err
    assert 1 <= len(lines) <= 12 and "/12 sim-h (100%)" in lines[-1]
