"""Logs in and out: a run's impressions as OBP's bandit_feedback, round trips through CSV and
Parquet, the Open Bandit Dataset layout, refusal of malformed logs, rebuilding the logged
decisions, and the ``experiments.evaluate`` / ``experiments.ope_accuracy`` command lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from experiments import evaluate, ope_accuracy
from sim.ope import LogValidationError, export_bandit_feedback, load_bandit_feedback, save_bandit_feedback
from sim.ope.data import OBP_KEYS
from sim.ope.estimators import ESTIMATOR_NAMES
from sim.ope.estimators.slate import SLATE_ESTIMATOR_NAMES
from sim.ope.logged import build_target, from_log, target_probabilities
from sim.logs import read_impressions
from sim.ope.runs import read_visit_contexts, run_catalog, run_config, run_world
from sim.runner import run_experiment
from sim.streams import generator
from tests.conftest import tiny_run_config

REPO = Path(__file__).resolve().parents[2]
COLUMNS = 8   # ranker.columns of tiny_run_config (the default)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-day run with a uniform cell, a fixed cell and a contextual Thompson cell."""
    out = tmp_path_factory.mktemp("ope_data") / "run"
    run_experiment(tiny_run_config(("uniform", "fixed", "lints")), out)
    return out


# ---- export -----------------------------------------------------------------------------------------
def test_run_log_exports_to_bandit_feedback(run):
    bf = export_bandit_feedback(run, "uniform")
    log = read_impressions(run, cell="uniform", time_order=True)
    catalog = run_catalog(run_config(run))
    n, K = len(log), catalog.max_artworks
    assert set(OBP_KEYS) <= set(bf) and bf["n_rounds"] == n > 1000
    # Actions are slots of the logged title's pool; n_actions is the largest pool.
    assert bf["n_actions"] == K and np.array_equal(bf["action_context"], np.eye(K))
    assert np.array_equal(bf["n_candidates"], catalog.pool_size[bf["title"]])
    assert (bf["action"] < bf["n_candidates"]).all()
    assert np.array_equal(catalog.pool[bf["title"], bf["action"]], bf["artwork"])
    assert np.array_equal(bf["artwork_theme"], catalog.artwork_theme[bf["artwork"]])
    assert np.allclose(bf["pscore"], 1.0 / bf["n_candidates"])          # uniform logging
    assert np.array_equal(bf["reward"], log["reward"].to_numpy(float))
    assert np.array_equal(bf["position"], log["row"].to_numpy() * COLUMNS + log["column"].to_numpy())
    names = bf["context_names"]
    assert bf["context"].shape == (n, len(names)) and names[-2:] == ["row", "column"]
    assert np.array_equal(bf["context"][:, names.index("familiar")], log["familiar"].to_numpy(float))
    assert any(name.startswith("affinity_") for name in names)         # the logged member context


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_bandit_feedback_round_trips(run, tmp_path, suffix):
    bf = export_bandit_feedback(run, "fixed")
    back = load_bandit_feedback(save_bandit_feedback(bf, tmp_path / f"feedback{suffix}"))
    for key in OBP_KEYS + ("n_candidates", "title", "artwork", "member", "time", "context_names"):
        assert np.array_equal(np.asarray(back[key]), np.asarray(bf[key])), key


def test_logged_decisions_reproduce_the_logged_propensities(run):
    """Each logging policy, rebuilt and queried on its own logged decisions before its first
    retrain, gives back exactly the logged propensity: the DecisionBatch (candidates, mask,
    position, familiarity and the contextual policy's member context) is rebuilt faithfully."""
    cfg = run_config(run)
    world = run_world(cfg)
    contexts = read_visit_contexts(run)
    for i, cell in enumerate(c.name for c in cfg.cells):
        log = read_impressions(run, cell=cell, time_order=True)
        log = log[log["model_version"] == 0]
        assert len(log) > 100, cell
        data = from_log(log, world.catalog, contexts)
        seed = int(generator(cfg.seed, "policy-seed", i).integers(2**31))   # as the engine seeds cells
        probs = target_probabilities(build_target({"name": cell}, world.catalog, seed=seed), data.decisions)
        assert np.array_equal(probs[np.arange(len(data)), data.action], data.pscore), cell
    assert data.decisions.context is not None and np.ptp(data.decisions.context) > 0


# ---- the Open Bandit Dataset layout -------------------------------------------------------------------
USERS = [f"{h:032x}" for h in (0xCEF3390ED299C09874189C387777674A, 0x81CE123CBB5BD8CE818F60FB3586BBA5,
                               0x03A5648A76832F83C859D46BC06CB64A)]


def obd_frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Open Bandit Dataset rows, in shuffled time order: 1-based positions, hashed user features."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2019-11-24 00:03:13.442536+00:00") + pd.to_timedelta(rng.permutation(n) * 7.5, "s")
    df = pd.DataFrame({"timestamp": ts.astype(str), "item_id": rng.integers(0, 10, n),
                       "position": rng.integers(1, 4, n), "click": (rng.random(n) < 0.2).astype(int),
                       "propensity_score": np.full(n, 1 / 30)})
    for j in range(4):
        df[f"user_feature_{j}"] = [USERS[k] for k in rng.integers(0, 2 if j else 3, n)]
    for j in range(5):
        df[f"user-item_affinity_{j}"] = np.round(rng.random(n) * (rng.random(n) < 0.3), 3)
    df.loc[0, "item_id"] = 11          # so n_actions = 12
    return df


def write_obd(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=True)        # the dataset's files carry a leading unnamed index column
    return path


def test_open_bandit_dataset_csv_loads_as_is(tmp_path):
    df = obd_frame()
    bf = load_bandit_feedback(write_obd(df, tmp_path / "all.csv"))
    order = np.argsort(pd.to_datetime(df["timestamp"]).to_numpy(), kind="stable")
    s = df.iloc[order].reset_index(drop=True)
    assert bf["n_rounds"] == 40 and bf["n_actions"] == 12
    assert np.array_equal(bf["position"], s["position"].to_numpy() - 1)        # 1-based -> 0-based
    assert bf["position"].min() == 0 and bf["position"].max() == 2
    assert np.array_equal(bf["action"], s["item_id"].to_numpy())
    assert np.array_equal(bf["reward"], s["click"].to_numpy(float))
    assert np.array_equal(bf["pscore"], s["propensity_score"].to_numpy())
    # One-hot user features (first level of each dropped, as OBP does), then the affinity floats.
    names = bf["context_names"]
    assert names[-5:] == [f"user-item_affinity_{j}" for j in range(5)]
    assert bf["context"].shape == (40, (3 - 1) + 3 * (2 - 1) + 5)
    col = names.index(f"user_feature_0_{USERS[0]}")   # ("03a5..." sorts first: dropped)
    assert np.array_equal(bf["context"][:, col], (s["user_feature_0"] == USERS[0]).to_numpy(float))
    assert np.array_equal(bf["context"][:, -1], s["user-item_affinity_4"].to_numpy())
    assert np.array_equal(bf["action_context"], np.eye(12))


def test_open_bandit_dataset_item_context_is_used_when_present(tmp_path):
    write_obd(obd_frame(), tmp_path / "all.csv")
    items = pd.DataFrame({"item_id": range(12), "item_feature_0": np.linspace(-1, 1, 12),
                          "item_feature_1": [USERS[k % 2] for k in range(12)],
                          "item_feature_2": [USERS[k % 3] for k in range(12)]})
    items.to_csv(tmp_path / "item_context.csv")
    bf = load_bandit_feedback(tmp_path / "all.csv")
    assert bf["action_context"].shape == (12, 3)
    assert np.array_equal(bf["action_context"][:, -1], items["item_feature_0"].to_numpy())


# ---- malformed logs -------------------------------------------------------------------------------------
def native_frame(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    k = rng.integers(2, 6, n)
    return pd.DataFrame({"action": (rng.random(n) * k).astype(int), "position": rng.integers(0, 80, n),
                         "reward": (rng.random(n) < 0.1).astype(int), "pscore": 1.0 / k, "n_candidates": k})


def _set(column, rows, value):
    def edit(df):
        df[column] = df[column].astype(object)
        df.loc[list(rows), column] = value
        return df
    return edit


MALFORMED = {
    "obd missing propensity": (obd_frame, lambda df: df.drop(columns="propensity_score"), "propensity_score", 40),
    "obd zero propensity": (obd_frame, _set("propensity_score", [3, 9], 0.0), "propensity_score", 2),
    "obd propensity above 1": (obd_frame, _set("propensity_score", [5], 1.5), "propensity_score", 1),
    "obd NaN click": (obd_frame, _set("click", [1, 2, 30], np.nan), "click", 3),
    "obd position 0 (1-based)": (obd_frame, _set("position", [4, 8], 0), "position", 2),
    "obd text item id": (obd_frame, _set("item_id", [7], "abc"), "item_id", 1),
    "obd empty user feature": (obd_frame, _set("user_feature_1", [0, 11], np.nan), "user_feature_1", 2),
    "obd NaN affinity": (obd_frame, _set("user-item_affinity_3", [6], np.nan), "user-item_affinity_3", 1),
    "native missing reward": (native_frame, lambda df: df.drop(columns="reward"), "reward", 30),
    "native negative position": (native_frame, _set("position", [0, 1, 2], -1), "position", 3),
    "native NaN propensity": (native_frame, _set("pscore", [10, 20], np.nan), "pscore", 2),
    "native action beyond its pool": (native_frame, _set("action", [4, 5], 7), "action", 2),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_malformed_logs_are_refused_naming_column_and_bad_rows(case, suffix, tmp_path):
    make, edit, column, n_bad = MALFORMED[case]
    df = edit(make())
    path = tmp_path / f"log{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(path)
    with pytest.raises(LogValidationError) as err:
        load_bandit_feedback(path)
    assert err.value.column == column and err.value.n_bad == n_bad
    assert f"'{column}'" in str(err.value) and f"{n_bad:,} of {len(df):,} rows" in str(err.value)


# ---- command lines --------------------------------------------------------------------------------------
def test_evaluate_a_run_directory(run, tmp_path, capsys):
    out = tmp_path / "ope"
    code = evaluate.main([str(run), "--policy", "fixed", "--policy", "oracle", "--policy", "thompson",
                          "--policy", "epsilon_greedy,epsilon=0.2", "--n-bootstrap", "100", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"table: {out / 'ope_estimates.csv'}" in printed and f"chart: {out / 'ope_estimates.png'}" in printed
    table = pd.read_csv(out / "ope_estimates.csv")
    assert len(table) == 4 * len(ESTIMATOR_NAMES) and set(table["estimator"]) == set(ESTIMATOR_NAMES)
    assert {"replay", "ipw", "snipw", "dm", "dr", "sndr"} <= set(ESTIMATOR_NAMES)
    assert table["truth"].notna().all() and table["relative_error"].notna().all()
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    assert (table["cell"] == "uniform").all()   # the control cell by default
    trained = table.set_index("policy")["trained_on"]
    assert trained["fixed"].max() == 0 and trained["epsilon_greedy,epsilon=0.2"].min() > 0
    img = mpimg.imread(out / "ope_estimates.png")
    assert img.shape[0] >= 400 and img.shape[1] >= 700 and np.ptp(img[..., :3]) > 0.5


@pytest.mark.slow
def test_evaluate_an_open_bandit_dataset_file_from_the_command_line(tmp_path):
    csv = write_obd(obd_frame(400, seed=3), tmp_path / "all.csv")
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", str(csv), "--policy", "uniform",
                           "--policy", "thompson", "--n-bootstrap", "50"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "all_ope" / "ope_estimates.csv")
    assert set(table["policy"]) == {"uniform", "thompson"} and table["truth"].isna().all()
    assert "chart:" in done.stdout


def test_evaluate_refuses_bad_input_clearly(run, tmp_path, capsys):
    csv = write_obd(obd_frame(), tmp_path / "all.csv")
    assert evaluate.main([str(run), "--policy", "no_such_policy"]) == 2
    assert "--policy no_such_policy.name" in capsys.readouterr().err
    assert evaluate.main([str(csv), "--policy", "oracle"]) == 2
    assert "ground truth" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    obd_frame().assign(propensity_score=0.0).to_csv(bad)
    assert evaluate.main([str(bad), "--policy", "uniform"]) == 2
    assert "'propensity_score': 40 of 40 rows" in capsys.readouterr().err


@pytest.mark.slow
def test_ope_accuracy_quick_run_writes_tables_and_charts(tmp_path, capsys):
    assert ope_accuracy.main(["--quick", "--n-bootstrap", "20", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "ope_accuracy_summary.csv")
    assert set(summary["estimator"]) == set(ESTIMATOR_NAMES)
    assert set(summary["logger"]) == set(ope_accuracy.Settings().loggers)
    for name in ("relative_error_vs_log_size.png", "bias_at_full_log.png", "relative_error_vs_pool_size.png",
                 "page_error_vs_log_size.png", "page_bias.png"):
        assert str(tmp_path / name) in printed
        assert mpimg.imread(tmp_path / name).shape[0] >= 400
    pages = pd.read_csv(tmp_path / "page_ope_summary.csv")
    assert set(pages["estimator"]) == set(SLATE_ESTIMATOR_NAMES)
    assert "independent" in set(pages["response"])
    assert "page level, response independent" in printed
    assert not list(tmp_path.glob("*.tmp")), "a table or chart was left under its temporary name"


def test_evaluate_takes_user_estimators_by_import_path_with_hyperparameters(run, tmp_path, capsys):
    out = tmp_path / "ope"
    code = evaluate.main([str(run), "--policy", "fixed", "--estimators", "ipw,tests.ope.test_ope.LoggedMean",
                          "--estimator", "dr,lambda_=3", "--n-bootstrap", "50", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "ope_estimates.csv").set_index("estimator")
    assert list(table.index) == ["ipw", "LoggedMean", "dr"]
    assert table.loc["dr", "weight_clip"] == 3 and table.loc["ipw", "weight_clip"] == np.inf
    log = read_impressions(run, ["reward"], cell="uniform", time_order=True)
    # LoggedMean ignores the target: the mean reward of the evaluated (second) half of the log.
    assert table.loc["LoggedMean", "estimate"] == pytest.approx(log["reward"][len(log) // 2:].mean(), rel=1e-9)
    with pytest.raises(SystemExit):
        evaluate.main([str(run), "--policy", "fixed", "--estimators", "ipx"])
    assert "did you mean 'ipw'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(run), "--policy", "fixed", "--estimator", "ipw,lambda_=-1"])
    assert "--estimator ipw,lambda_=-1: ipw.lambda_ = -1 is not allowed: a number > 0 or inf" \
        in capsys.readouterr().err


def test_evaluate_names_the_clip_option_when_it_is_out_of_range(run, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(run), "--policy", "fixed", "--clip", "0"])
    assert "--clip 0.0: ipw.lambda_ = 0.0 is not allowed: a number > 0 or inf" in capsys.readouterr().err


def test_evaluate_online_prints_the_closed_loop_value_beside_the_estimates(run, tmp_path, capsys):
    from sim.ope.groundtruth import online_value

    assert evaluate.main([str(run), "--policy", "fixed", "--online", "--n-bootstrap", "20",
                          "--out", str(tmp_path / "ope")]) == 0
    out = capsys.readouterr().out
    direct = online_value(run_config(run), {"name": "fixed"}, name="fixed")["take_fraction"]["estimate"]
    table = pd.read_csv(tmp_path / "ope" / "ope_estimates.csv")
    assert table["online_take_fraction"].to_numpy() == pytest.approx(direct, rel=1e-12)
    header = next(line for line in out.splitlines() if line.startswith("policy"))
    assert header.split()[-1] == "online"
    rows = [line for line in out.splitlines() if line.startswith("fixed")]
    assert len(rows) == len(table) and all(line.split()[-1] == f"{direct:.3%}" for line in rows)
