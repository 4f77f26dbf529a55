"""Reliability battery, part 2 (issue 16): run directories that hold the user's files, malformed
and corrupt logs, and the command lines that read them (``evaluate``, ``plot``, ``power``) --
in-process. Each refusal is one line naming the key, column or file; nothing the project did not
write is touched; nothing complete-looking is left behind."""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.runner import run_experiment
from sim.schema import ConfigError
from tests.cli.reliability_support import assert_one_line, base_config, snapshot
from tests.conftest import tiny_world


def run_cli_main(main, argv: list[str]) -> tuple[int, str, str]:
    """A command line's ``main(argv)`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv) or 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if isinstance(exit_.code, str):
                err.write(exit_.code)
    return code, out.getvalue(), err.getvalue()


# ---- one small run with a uniform and a Thompson cell, shared by the log cases ----------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel_run") / "run"
    cfg = {"seed": 3, "world": tiny_world(n_members=120, n_titles=12, artworks_max=5),
           "engine": {"days": 0.4, "progress": False, "retrain_hours": 2},
           "ranker": {"name": "popularity", "rows": 3, "columns": 4},
           "experiment": {"name": "rel", "control": "uniform", "cells": [
               {"name": "uniform", "share": 0.5, "policy": {"name": "uniform"}},
               {"name": "thompson", "share": 0.5, "policy": {"name": "thompson"}}]}}
    run_experiment(cfg, out)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> dict[str, Path]:
    from sim.ope.data import export_bandit_feedback, save_bandit_feedback

    d = tmp_path_factory.mktemp("rel_bf")
    bf = export_bandit_feedback(run_dir, "uniform")
    return {"csv": save_bandit_feedback(bf, d / "bf.csv"), "parquet": save_bandit_feedback(bf, d / "bf.parquet")}


def evaluate_main(argv):
    from experiments.evaluate import main

    return run_cli_main(main, ["--n-bootstrap", "20"] + [str(a) for a in argv])


# ---- run directories holding the user's files (defect 2) ---------------------------------------------
FOREIGN = {
    "notes.txt": "text", "logs": "dir", "charts": "dir", "config.yaml": "yaml", "metrics.json": "json",
    ".hydra": "dir", "run.log": "text", "error.txt": "text", "timeseries.csv": "text",
    "visit_context": "dir", "link": "symlink", "nested": "deep",
}


def _make_foreign(root: Path, name: str, kind: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    p = root / name
    if kind == "dir":
        p.mkdir()
        (p / "mine.dat").write_bytes(b"user data")
    elif kind == "deep":
        (p / "a" / "b").mkdir(parents=True)
        (p / "a" / "b" / "x.txt").write_text("deep")
    elif kind == "symlink":
        target = root.parent / "outside.txt"
        target.write_text("outside")
        p.symlink_to(target)
    elif kind == "json":
        p.write_text('{"complete": false, "mine": 1}')
    else:
        p.write_text(f"user's {name}\n")


@pytest.mark.parametrize("name", FOREIGN)
def test_directory_with_a_foreign_entry_is_refused_and_untouched(name, tmp_path):
    out = tmp_path / "run"
    _make_foreign(out, name, FOREIGN[name])
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        run_experiment(base_config(), out)
    assert_one_line(err.value, str(out), name, "overwrite")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["notes.txt", "logs", ".hydra", "nested"])
def test_overwrite_writes_the_run_and_leaves_other_files_alone(name, tmp_path):
    out = tmp_path / "run"
    _make_foreign(out, name, FOREIGN[name])
    before = snapshot(out)
    cfg = base_config(overwrite=True)
    run_experiment(cfg, out)
    assert json.loads((out / "metrics.json").read_text())["complete"] is True
    after = snapshot(out)
    outputs = ("logs", "charts", "config.yaml", "metrics.json", "timeseries.csv", "visit_context",
               "run_info.json")
    kept = {k: v for k, v in before.items() if not k.split("/")[0] in outputs}
    assert {k: after.get(k) for k in kept} == kept


def test_refused_value_leaves_the_users_logs_and_hydra_dir(tmp_path):
    from experiments.run import remove_hydra_leftovers

    out = tmp_path / "run"
    _make_foreign(out, ".hydra", "dir")
    _make_foreign(out, "mine.log", "text")
    _make_foreign(out, "run.log", "text")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError):
        run_experiment({**base_config(), "seed": -1}, out)
    remove_hydra_leftovers(out, ())          # Hydra wrote none of them in this launch
    assert snapshot(tmp_path) == before


def test_rerun_into_its_own_killed_attempt_replaces_only_listed_outputs(tmp_path):
    from sim.outputs import RUN_OUTPUTS
    from sim.rundir import claim

    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    claim(out, RUN_OUTPUTS)
    (out / "logs" / "part-09999.parquet").write_bytes(b"stale")
    (out / "metrics.json.123-abc.tmp").write_text("{")
    run_experiment(base_config(), out)
    assert not (out / "logs" / "part-09999.parquet").exists()
    assert not list(out.glob("*.tmp"))


PREFLIGHT = [
    (["hydra.run.dir={d}"], "notes", "hydra.run.dir"),
    (["hydra.run.dir={d}/notes.txt"], "notes", "an existing file"),
    (["-m", "hydra.sweep.dir={d}/notes.txt"], "notes", "an existing file"),
    (["experiment.name=../../escaped"], None, "experiment.name"),
    (["-m", "experiment.name=a,../../../esc"], None, "experiment.name"),
    (["-m", "seed=0,1", "world.name=ok,../up"], None, "world.name"),
    (["experiment.name=" + "n" * 300], None, "experiment.name"),
]


@pytest.mark.parametrize("argv,setup,needle", PREFLIGHT, ids=[" ".join(p[0])[:40] for p in PREFLIGHT])
def test_command_line_refused_before_hydra_creates_anything(argv, setup, needle, tmp_path):
    from experiments.run import preflight

    d = tmp_path / "d"
    if setup:
        _make_foreign(d, "notes.txt", "text")
    before = snapshot(tmp_path)
    message = preflight([a.format(d=d) for a in argv])
    assert message is not None
    assert_one_line(message, needle)
    assert snapshot(tmp_path) == before


def test_command_line_overwrite_lets_a_foreign_directory_through(tmp_path):
    from experiments.run import preflight

    _make_foreign(tmp_path / "d", "notes.txt", "text")
    assert preflight([f"hydra.run.dir={tmp_path / 'd'}", "engine.overwrite=true"]) is None


# ---- Thompson and the counting policies on the project's own exports (defect 4) ----------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("policy", ["thompson", "epsilon_greedy", "ucb1", "softmax", "uniform"])
def test_policy_evaluates_on_exported_feedback(fmt, policy, exported, tmp_path):
    code, out, err = evaluate_main([exported[fmt], "--policy", policy, "--out", tmp_path / "ope"])
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "ope" / "ope_estimates.csv")
    assert len(rows) and rows["estimate"].notna().all()


def test_thompson_probabilities_over_a_subset_match_the_beta_argmax_probability():
    """Two offered images of a three-image title: P(image 0 wins) against a numerical integral
    of the Beta posteriors (tolerance: 4 Monte Carlo standard errors)."""
    from scipy import integrate, stats

    from sim.ope.logged import synthetic_catalog
    from sim.policies import build_policy
    from sim.policies.base import ArtworkCounts
    from sim.testing import make_decision_batch  # noqa: F401 -- the batch type's home

    from sim.policies.base import DecisionBatch

    cat = synthetic_catalog(3)
    pol = build_policy({"name": "thompson", "n_draws": 20_000, "prior_alpha": 1.0, "prior_beta": 1.0})
    pol.reset(cat)
    pol.update(ArtworkCounts(np.array([10.0, 10.0, 10.0]), np.array([6.0, 4.0, 9.0])))
    n = 1
    batch = DecisionBatch(member=np.zeros(n, np.int32), title=np.zeros(n, np.int32),
                          candidates=np.array([[0, 1, -1]], np.int32), mask=np.array([[True, True, False]]),
                          row=np.zeros(n, np.int16), column=np.zeros(n, np.int16), time=np.zeros(n),
                          familiar=np.zeros(n, bool), context=None)
    p = pol.probabilities(batch)[0]
    a, b = stats.beta(7, 5), stats.beta(5, 7)
    exact = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1)[0]
    se = np.sqrt(exact * (1 - exact) / 20_000)
    assert p[2] == 0 and abs(p.sum() - 1) < 1e-12
    assert abs(p[0] - exact) < 4 * se


# ---- malformed and corrupt logs (defects 5, 9, 10) -------------------------------------------------------
def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _flip(src: Path, dst: Path, at: float) -> Path:
    data = bytearray(src.read_bytes())
    i = int(len(data) * at)
    data[i:i + 64] = bytes(64)
    dst.write_bytes(bytes(data))
    return dst


CORRUPT = [("truncated-10", lambda s, d: _truncate(s, d, 0.1)), ("truncated-50", lambda s, d: _truncate(s, d, 0.5)),
           ("truncated-90", lambda s, d: _truncate(s, d, 0.9)), ("zeroed-30", lambda s, d: _flip(s, d, 0.3)),
           ("zeroed-60", lambda s, d: _flip(s, d, 0.6)), ("empty", lambda s, d: _truncate(s, d, 0.0)),
           ("text", lambda s, d: (d.write_text("action,reward\n1,0\n"), d)[1])]


@pytest.mark.parametrize("name,corrupt", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_parquet_file_is_refused_in_one_line(name, corrupt, exported, tmp_path):
    bad = corrupt(exported["parquet"], tmp_path / "bad.parquet")
    code, out, err = evaluate_main([bad, "--policy", "uniform", "--out", tmp_path / "ope"])
    if code == 0:        # a zeroed page may still decode; then the result must be a full table
        assert (tmp_path / "ope" / "ope_estimates.csv").is_file()
        return
    assert code == 2
    assert_one_line(err, "error")
    assert not (tmp_path / "ope").exists()


@pytest.mark.parametrize("name,corrupt", CORRUPT[:4], ids=[c[0] for c in CORRUPT[:4]])
@pytest.mark.parametrize("command", ["evaluate", "plot"])
def test_corrupt_log_part_of_a_run_is_refused_in_one_line(command, name, corrupt, run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for sub in ("logs", "visit_context"):
        for part in (run / sub).glob("part-*.parquet"):
            corrupt(Path(str(part)), part)
    if command == "evaluate":
        code, out, err = evaluate_main([run, "--policy", "uniform", "--out", tmp_path / "ope"])
    else:
        from experiments.plot import main

        shutil.rmtree(run / "charts", ignore_errors=True)
        code, out, err = run_cli_main(main, [str(run), "--no-picture"])
    if code == 0:     # zeroed bytes in a page this command does not read
        return
    assert_one_line(err, "error")


@pytest.mark.parametrize("meta", [[1, 2], "text", 3, None, {"n_actions": "many"}, {"n_actions": -4},
                                  {"n_actions": 5, "action_context": "x"}], ids=str)
def test_bad_parquet_metadata_is_refused_in_one_line(meta, exported, tmp_path):
    table = pq.read_table(exported["parquet"])
    raw = dict(table.schema.metadata or {})
    raw[b"homepage_sim.bandit_feedback"] = json.dumps(meta).encode()
    path = tmp_path / "meta.parquet"
    pq.write_table(table.replace_schema_metadata(raw), path)
    code, out, err = evaluate_main([path, "--policy", "uniform", "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, "error")


def _csv(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


CSV_CASES = [
    ("header only", "action,position,reward,pscore\n", "no impressions"),
    ("no action", "position,reward,pscore\n0,0,0.5\n", "action"),
    ("no position", "action,reward,pscore\n0,0,0.5\n", "position"),
    ("no reward", "action,position,pscore\n0,0,0.5\n", "reward"),
    ("no pscore", "action,position,reward\n0,0,0\n", "pscore"),
    ("text action", "action,position,reward,pscore\nx,0,0,0.5\n1,0,1,0.5\n", "action"),
    ("negative action", "action,position,reward,pscore\n-1,0,0,0.5\n1,0,1,0.5\n", "action"),
    ("fractional action", "action,position,reward,pscore\n0.5,0,0,0.5\n1,0,1,0.5\n", "action"),
    ("nan reward", "action,position,reward,pscore\n0,0,nan,0.5\n1,0,1,0.5\n", "reward"),
    ("zero pscore", "action,position,reward,pscore\n0,0,0,0\n1,0,1,0.5\n", "pscore"),
    ("pscore above 1", "action,position,reward,pscore\n0,0,0,1.5\n1,0,1,0.5\n", "pscore"),
    ("empty pscore", "action,position,reward,pscore\n0,0,0,\n1,0,1,0.5\n", "pscore"),
    ("action beyond n_candidates", "action,position,reward,pscore,n_candidates\n3,0,0,0.5,2\n1,0,1,0.5,2\n",
     "action"),
    ("zero n_candidates", "action,position,reward,pscore,n_candidates\n0,0,0,0.5,0\n1,0,1,0.5,2\n",
     "n_candidates"),
    ("obd without click", "item_id,position,propensity_score\n0,1,0.5\n", "click"),
    ("obd position 0", "item_id,position,click,propensity_score\n0,0,0,0.5\n1,1,1,0.5\n", "position"),
    ("obd bad timestamp", "timestamp,item_id,position,click,propensity_score\nnot-a-date,0,1,0,0.5\n",
     "timestamp"),
]


@pytest.mark.parametrize("what,text,column", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_malformed_csv_is_refused_in_one_line_naming_the_column(what, text, column, tmp_path):
    code, out, err = evaluate_main([_csv(tmp_path, text), "--policy", "uniform", "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, column)
    assert "train-fraction" not in err and "np.float" not in err and "np.int" not in err
    assert not (tmp_path / "ope").exists()


def test_non_utf8_csv_is_refused_in_one_line(tmp_path):
    p = tmp_path / "log.csv"
    p.write_bytes(b"action,position,reward,pscore\n\xff\xfe,0,0,0.5\n")
    code, out, err = evaluate_main([p, "--policy", "uniform"])
    assert code == 2
    assert_one_line(err, "error")


OBD = "item_id,position,click,propensity_score\n0,1,0,0.5\n1,2,1,0.5\n"


@pytest.mark.parametrize("items", ["item_id,item_feature_1\n0,a\n1,b\n", ",item_id\n0,0\n1,1\n",
                                   "garbage", "item_id,item_feature_0\n0,0.5\n"],
                         ids=["no item_feature_0", "only item_id", "garbage", "one item short"])
def test_bad_item_context_is_refused_in_one_line(items, tmp_path):
    log = _csv(tmp_path, OBD)
    (tmp_path / "item_context.csv").write_text(items)
    code, out, err = evaluate_main([log, "--policy", "uniform", "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, "error")


def _tracemalloc_peak(fn) -> int:
    tracemalloc.start()
    try:
        try:
            fn()
        except (ValueError, ConfigError):
            pass        # a refusal is fine; what it allocated first is what this measures
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["action=40000", "action=200000", "n_actions=1000000", "metadata n_actions"])
def test_memory_scales_with_rows_times_candidates_not_actions_squared(how, exported, tmp_path):
    """Loading allocates at most ~64 bytes per (row, eligible action) -- never actions^2 -- and a
    log that would need more than the available memory is refused in one line first."""
    from sim.ope.data import load_bandit_feedback
    from sim.ope.logged import from_bandit_feedback

    rows = "".join(f"{i % 3},0,{i % 2},0.5\n" for i in range(200))
    n_actions = None
    if how.startswith("action="):
        big = int(how.split("=")[1])
        path = _csv(tmp_path, "action,position,reward,pscore\n" + rows + f"{big},0,0,0.5\n")
        n_rows, candidates = 201, big + 1        # no n_candidates: every action is eligible
    elif how == "n_actions=1000000":
        path = _csv(tmp_path, "action,position,reward,pscore,n_candidates\n"
                    + "".join(f"{i % 3},0,{i % 2},0.5,3\n" for i in range(200)))
        n_rows, candidates, n_actions = 200, 3, 1_000_000
    else:
        table = pq.read_table(exported["parquet"])
        raw = dict(table.schema.metadata or {})
        raw[b"homepage_sim.bandit_feedback"] = json.dumps({"n_actions": 1_000_000}).encode()
        path = tmp_path / "m.parquet"
        pq.write_table(table.replace_schema_metadata(raw), path)
        n_rows, candidates = table.num_rows, int(table.column("n_candidates").to_numpy().max())
    peak = _tracemalloc_peak(lambda: from_bandit_feedback(load_bandit_feedback(path, n_actions=n_actions)))
    assert peak < n_rows * candidates * 64 + 64 * 1024 ** 2


@pytest.mark.parametrize("available_mb", [50, 200])
def test_log_needing_more_than_available_memory_is_refused(available_mb, monkeypatch, tmp_path):
    import sim.memory

    monkeypatch.setattr(sim.memory, "available_memory", lambda: available_mb * 1024 ** 2)
    rows = "".join(f"{i % 3},0,{i % 2},0.5\n" for i in range(200))
    path = _csv(tmp_path, "action,position,reward,pscore\n" + rows + "1000000,0,0,0.5\n")
    code, out, err = evaluate_main([path, "--policy", "uniform", "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, "n_actions", "1000001", "GB")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_n_actions_argument_out_of_range_is_refused(value, exported, tmp_path):
    code, out, err = evaluate_main([exported["csv"], "--policy", "uniform", "--n-actions", value])
    assert code == 2
    assert_one_line(err, "--n-actions", value)


# ---- evaluate's arguments and policy files (defects 9, 10) ------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--train-fraction", "-0.5"), ("--train-fraction", "nan"),
                                        ("--train-fraction", "1"), ("--train-fraction", "1.5"),
                                        ("--train-fraction", "inf"), ("--clip", "0"), ("--clip", "-1"),
                                        ("--clip", "nan"), ("--n-bootstrap", "-1")])
def test_evaluate_argument_out_of_range_is_refused(flag, value, exported, tmp_path):
    code, out, err = evaluate_main([exported["csv"], "--policy", "uniform", flag, value,
                                    "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, flag, value)
    assert not (tmp_path / "ope").exists()


POLICY_FILES = {
    "syntax": "name: thompson\n  n_draws: [1,\n",
    "python-tag": "!!python/object/apply:os.system ['touch {marker}']\n",
    "python-name": "name: !!python/name:os.system\n",
    "list": "- thompson\n- uniform\n",
    "scalar": "thompson\n",
    "unknown-name": "name: nope\n",
    "bad-param": "name: thompson\nn_draws: -3\n",
}


@pytest.mark.parametrize("kind", POLICY_FILES)
def test_bad_policy_file_is_refused_in_one_line_and_never_executed(kind, exported, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_FILES[kind].format(marker=marker))
    code, out, err = evaluate_main([exported["csv"], "--policy", path, "--out", tmp_path / "ope"])
    assert code == 2
    assert_one_line(err, "--policy" if kind not in ("unknown-name", "bad-param") else "policy")
    assert not marker.exists()


@pytest.mark.parametrize("text", ["a: [", "- 1\n- 2\n", "world: {n_members: -5}\n", "\xff"],
                         ids=["syntax", "list", "bad value", "binary"])
@pytest.mark.parametrize("command", ["evaluate"])
def test_run_directory_with_an_invalid_config_yaml(text, command, run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_bytes(text.encode("latin-1"))
    if command == "evaluate":
        code, out, err = evaluate_main([run, "--policy", "uniform", "--out", tmp_path / "ope"])
        assert code == 2
        assert_one_line(err, "config.yaml" if text != "world: {n_members: -5}\n" else "world.n_members")



@pytest.mark.parametrize("days", ["-3", "0", "nan", "inf"])
def test_power_days_out_of_range_names_days(days, run_dir):
    from experiments.power import main

    code, out, err = run_cli_main(main, ["--pilot", str(run_dir), "--days", days])
    assert code != 0
    assert_one_line(err, "--days", days)
    assert "impressions_per_member" not in err


# ---- long analyses resume (defect 11) -------------------------------------------------------------------
def test_ope_accuracy_keeps_finished_units_and_resumes(monkeypatch, tmp_path):
    """Killed during its third (logger, seed) unit, a re-run with the same --out computes only the
    units that had not finished."""
    import experiments.ope_accuracy as oa

    calls = []

    class Killed(BaseException):
        pass

    def fake_log_run(s, logger, seed, out):
        calls.append((str(logger), seed))
        if len(calls) == kill_at[0]:
            raise Killed
        return (str(logger), seed)

    monkeypatch.setattr(oa, "log_run", fake_log_run)
    monkeypatch.setattr(oa, "evaluate_log", lambda s, run, seed, uniform_logger: (
        [{"size": 1, "unit": str(run)}], []))
    kill_at = [3]
    with pytest.raises(Killed):
        run_cli_main(oa.main, ["--seeds", "2", "--out", str(tmp_path / "acc")])
    first = list(calls)
    assert len(first) == 3 and len(list((tmp_path / "acc" / "units").glob("*.pkl"))) == 2
    calls.clear()
    kill_at = [2]
    with pytest.raises(Killed):
        run_cli_main(oa.main, ["--seeds", "2", "--out", str(tmp_path / "acc")])
    assert calls[0] == first[2]            # the two finished units were not recomputed
    calls.clear()
    kill_at = [1]
    with pytest.raises(Killed):            # other settings never reuse those units
        run_cli_main(oa.main, ["--seeds", "2", "--days", "2", "--out", str(tmp_path / "acc")])
    assert calls[0] == first[0]
