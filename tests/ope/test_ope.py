"""Off-policy estimators against closed forms and known truths; the simulator's ground truth
against the run's own metrics.

Statistical assertions use fixed seeds and tolerances of a few standard errors over seeds, and
each comes with a check that the effect it guards against would have been visible.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats

from sim.ope import dm, dr, estimate_all, ipw, replay, sndr, snipw
from sim.ope.estimators import (ESTIMATOR_NAMES, ESTIMATORS, IPW, MODEL_BASED, OffPolicyData,
                                OffPolicyEstimator, build_estimator)
from sim.ope.bootstrap import Terms, percentile_intervals
from sim.ope.groundtruth import expected_values, online_value, true_rewards
from sim.ope.logged import build_target, from_log, target_probabilities
from sim.ope.reward_model import RewardModel, cross_fitted_rewards
from sim.logs import read_impressions
from sim.ope.runs import read_visit_contexts, run_config, run_world
from sim.runner import run_experiment
from sim.schema import ConfigError
from sim.testing import check_estimator
from tests.readme_examples import readme_block
from tests.conftest import tiny_run_config


# ---- a hand-computable case -------------------------------------------------------------------------
def hand_case():
    """Four impressions, two actions, two positions. At each impression's *own* position:

    row  pos  action  reward  pscore  pi_e(.|x)    q_hat(x, .)   w = pi_e(a)/pscore
    0    0    0       1       0.5     [1.0, 0.0]   [0.6, 0.2]    1.0 / 0.5  = 2
    1    1    1       0       0.25    [0.5, 0.5]   [0.1, 0.3]    0.5 / 0.25 = 2
    2    0    1       1       0.5     [0.2, 0.8]   [0.5, 0.4]    0.8 / 0.5  = 1.6
    3    1    0       0       0.8     [0.0, 1.0]   [0.2, 0.9]    0.0 / 0.8  = 0

    The other position holds different numbers, so indexing the wrong position changes results.
    """
    reward = np.array([1.0, 0.0, 1.0, 0.0])
    action = np.array([0, 1, 1, 0])
    pscore = np.array([0.5, 0.25, 0.5, 0.8])
    position = np.array([0, 1, 0, 1])
    own = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
    q_own = np.array([[0.6, 0.2], [0.1, 0.3], [0.5, 0.4], [0.2, 0.9]])
    dist = np.zeros((4, 2, 2))
    q_hat = np.full((4, 2, 2), 0.99)
    for i, p in enumerate(position):
        dist[i, :, p], dist[i, :, 1 - p] = own[i], own[i][::-1]
        q_hat[i, :, p] = q_own[i]
    return dict(reward=reward, action=action, pscore=pscore, position=position, action_dist=dist,
                estimated_rewards_by_reg_model=q_hat)


# Worked by hand from the table in hand_case():
#   replay = (1*1 + 0.5*0 + 0.8*1 + 0*0) / (1 + 0.5 + 0.8 + 0)   = 1.8 / 2.3
#   ipw    = (2*1 + 2*0 + 1.6*1 + 0*0) / 4                       = 3.6 / 4     = 0.9
#   ipw, weights clipped at 1.8: (1.8 + 0 + 1.6 + 0) / 4         = 0.85
#   snipw  = 3.6 / (2 + 2 + 1.6 + 0)                              = 3.6 / 5.6
#   dm     = (0.6 + (0.05 + 0.15) + (0.1 + 0.32) + 0.9) / 4      = 2.12 / 4    = 0.53
#   residuals r - q_hat(a) = 0.4, -0.3, 0.6, -0.2; w * residual = 0.8, -0.6, 0.96, 0 (sum 1.16)
#   dr     = 0.53 + 1.16 / 4                                      = 0.82
#   dr, weights clipped at 1.8: 0.53 + (0.72 - 0.54 + 0.96) / 4  = 0.815
#   sndr   = 0.53 + 1.16 / 5.6
@pytest.mark.parametrize("estimator, kwargs, expected", [
    (replay, {}, 1.8 / 2.3),
    (ipw, {}, 0.9),
    (ipw, {"lambda_": 1.8}, 0.85),
    (snipw, {}, 3.6 / 5.6),
    (dm, {}, 0.53),
    (dr, {}, 0.82),
    (dr, {"lambda_": 1.8}, 0.815),
    (sndr, {}, 0.53 + 1.16 / 5.6),
])
def test_estimator_equals_hand_computed_value(estimator, kwargs, expected):
    est = estimator(**hand_case(), **kwargs)
    assert est.value == pytest.approx(expected, abs=1e-12)
    assert np.isnan(est.ci_low) and np.isnan(est.ci_high)   # no rng: point estimate only


def test_estimate_all_matches_single_estimators_and_seeded_intervals():
    case = hand_case()
    kw = {k: case[k] for k in ("reward", "action", "pscore", "position")}
    res = estimate_all(**kw, action_dists={"target": case["action_dist"]},
                       estimated_rewards_by_reg_model=case["estimated_rewards_by_reg_model"],
                       rng=np.random.default_rng(0), n_bootstrap=200)["target"]
    assert res["ipw"].value == pytest.approx(0.9) and res["dr"].value == pytest.approx(0.82)
    again = estimate_all(**kw, action_dists={"target": case["action_dist"]},
                         estimated_rewards_by_reg_model=case["estimated_rewards_by_reg_model"],
                         rng=np.random.default_rng(0), n_bootstrap=200)["target"]
    assert res == again                                       # same seed, same intervals
    assert res["ipw"].as_obp_interval() == {"mean": 0.9, "95.0% CI (lower)": res["ipw"].ci_low,
                                            "95.0% CI (upper)": res["ipw"].ci_high}


def test_inputs_are_validated_with_the_argument_name():
    case = hand_case()
    with pytest.raises(ValueError, match="pscore must be in"):
        ipw(**{**case, "pscore": np.array([0.5, 0.0, 0.5, 0.8])})
    with pytest.raises(ValueError, match="action_dist must sum to 1"):
        ipw(**{**case, "action_dist": case["action_dist"] * 0.5})
    with pytest.raises(ValueError, match="action must be in"):
        ipw(**{**case, "action": np.array([0, 2, 1, 0])})
    with pytest.raises(ValueError, match="needs estimated_rewards_by_reg_model"):
        dr(**{**case, "estimated_rewards_by_reg_model": None})


# ---- statistical properties on synthetic logs --------------------------------------------------------
def synthetic_log(rng: np.random.Generator, n: int, pool_sizes=(5,), stochastic: bool = False):
    """Uniform logging over each context's pool; true take probabilities q (n, K) known.

    The target is the oracle (argmax of q) or, if ``stochastic``, softmax(8 q) over the pool.
    Returns arrays in OBP's layout, the true q and the truth on these contexts."""
    k = rng.choice(np.asarray(pool_sizes), n)
    K = max(pool_sizes)
    mask = np.arange(K)[None, :] < k[:, None]
    q = np.where(mask, rng.uniform(0.05, 0.6, (n, K)), 0.0)
    action = (rng.random(n) * k).astype(np.int64)
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    if stochastic:
        z = np.where(mask, np.exp(8 * q), 0.0)
        pi = z / z.sum(axis=1, keepdims=True)
    else:
        pi = np.where(mask, q, -1) == np.where(mask, q, -1).max(axis=1, keepdims=True)
        pi = pi / pi.sum(axis=1, keepdims=True)
    truth = float((pi * q).sum(axis=1).mean())
    return dict(reward=reward, action=action, pscore=1.0 / k, action_dist=pi[:, :, None]), q, truth


def errors_over_seeds(estimator, n_seeds=300, n=400, **log_kw):
    errs = []
    for s in range(n_seeds):
        log, q, truth = synthetic_log(np.random.default_rng(s), n, **log_kw)
        errs.append(estimator(**log).value - truth)
    errs = np.array(errs)
    return errs.mean(), errs.std(ddof=1) / np.sqrt(errs.size)


def logged_mean(reward, **_):
    """The logging policy's own value: what ignoring the target policy would estimate."""
    return SimpleNamespace(value=reward.mean())


@pytest.mark.parametrize("estimator", [ipw, replay])
@pytest.mark.parametrize("stochastic", [False, True])
def test_ipw_and_replay_are_unbiased_under_uniform_logging(estimator, stochastic):
    bias, se = errors_over_seeds(estimator, stochastic=stochastic)
    assert abs(bias) < 3 * se, (bias, se)
    # The test has power: the logged rewards' own mean is far from the target's value.
    naive, naive_se = errors_over_seeds(logged_mean, stochastic=stochastic)
    assert abs(naive) > 10 * max(naive_se, se)


def test_replay_is_biased_when_pool_sizes_differ():
    """Replay keeps 1/K of each context's impressions, so small pools are over-represented; the
    oracle's value grows with K, so replay underestimates it. IPW weights by K and stays unbiased."""
    bias, se = errors_over_seeds(replay, pool_sizes=(2, 10))
    assert bias < -5 * se
    bias_ipw, se_ipw = errors_over_seeds(ipw, pool_sizes=(2, 10))
    assert abs(bias_ipw) < 3 * se_ipw


def test_replay_equals_snipw_for_a_deterministic_target_under_uniform_logging():
    log, _, _ = synthetic_log(np.random.default_rng(1), 2000, pool_sizes=(6,))
    assert replay(**log).value == pytest.approx(snipw(**log).value, rel=1e-12)
    matched = log["action_dist"][np.arange(2000), log["action"], 0] == 1
    assert replay(**log).value == pytest.approx(log["reward"][matched].mean(), rel=1e-12)
    stochastic, _, _ = synthetic_log(np.random.default_rng(1), 2000, pool_sizes=(6,), stochastic=True)
    assert replay(**stochastic).value == pytest.approx(snipw(**stochastic).value, rel=1e-12)
    varying, _, _ = synthetic_log(np.random.default_rng(1), 2000, pool_sizes=(2, 10))
    assert abs(replay(**varying).value - snipw(**varying).value) > 1e-3   # not so with varying K


def test_dr_equals_dm_with_an_exact_reward_model_and_ipw_with_a_zero_model():
    log, q, _ = synthetic_log(np.random.default_rng(2), 1000)
    n = 1000
    exact = dict(log, reward=q[np.arange(n), log["action"]])    # rewards equal their expectation
    q3 = q[:, :, None]
    assert dr(**exact, estimated_rewards_by_reg_model=q3).value == pytest.approx(
        dm(**exact, estimated_rewards_by_reg_model=q3).value, abs=1e-12)
    assert sndr(**exact, estimated_rewards_by_reg_model=q3).value == pytest.approx(
        dm(**exact, estimated_rewards_by_reg_model=q3).value, abs=1e-12)
    zero = np.zeros_like(q3)
    assert dr(**log, estimated_rewards_by_reg_model=zero).value == pytest.approx(ipw(**log).value, abs=1e-12)
    assert sndr(**log, estimated_rewards_by_reg_model=zero).value == pytest.approx(snipw(**log).value, abs=1e-12)
    assert dm(**log, estimated_rewards_by_reg_model=q3).value != pytest.approx(ipw(**log).value, abs=1e-4)


def test_dr_with_an_exact_model_is_unbiased_and_less_variable_than_ipw():
    dr_err, ipw_err = [], []
    for s in range(200):
        log, q, truth = synthetic_log(np.random.default_rng(s), 400)
        dr_err.append(dr(**log, estimated_rewards_by_reg_model=q[:, :, None]).value - truth)
        ipw_err.append(ipw(**log).value - truth)
    dr_err, ipw_err = np.array(dr_err), np.array(ipw_err)
    assert abs(dr_err.mean()) < 3 * dr_err.std(ddof=1) / np.sqrt(dr_err.size)
    assert dr_err.std() < 0.8 * ipw_err.std()


# ---- bootstrap -------------------------------------------------------------------------------------
def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    log, _, _ = synthetic_log(np.random.default_rng(3), 500)
    ours = ipw(**log, rng=np.random.default_rng(4), n_bootstrap=4000)
    w_r = log["action_dist"][np.arange(500), log["action"], 0] / log["pscore"] * log["reward"]
    ref = scipy.stats.bootstrap((w_r,), np.mean, n_resamples=4000, method="percentile",
                                rng=np.random.default_rng(5)).confidence_interval
    se = w_r.std(ddof=1) / np.sqrt(w_r.size)
    assert ours.ci_low == pytest.approx(ref.low, abs=0.25 * se)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.25 * se)
    assert ours.ci_low < ours.value < ours.ci_high
    # A self-normalised estimator is resampled as a ratio, not as a mean of per-row terms.
    t = Terms(np.zeros(4), np.array([1.0, 0, 0, 0]), np.array([1.0, 1, 0, 0]))
    lo, hi = percentile_intervals([t], np.random.default_rng(0), 2000)[0]
    assert 0 <= lo <= hi <= 1


# ---- the reward model --------------------------------------------------------------------------------
def test_reward_model_recovers_multiplicative_effects_and_cross_fits():
    rng = np.random.default_rng(6)
    n, arms = 200_000, 6
    arm_rate = np.array([0.02, 0.04, 0.03, 0.05, 0.01, 0.06])
    pos_factor = np.array([1.0, 0.5, 0.25])
    arm, pos = rng.integers(0, arms, n), rng.integers(0, 3, n)
    reward = (rng.random(n) < arm_rate[arm] * pos_factor[pos]).astype(float)
    model = RewardModel().fit(arm, reward, {"pos": pos})
    pred = model.predict(np.tile(np.arange(arms), (3, 1)), {"pos": np.arange(3)})
    assert pred == pytest.approx(arm_rate[None, :] * pos_factor[:, None], rel=0.15)
    q = cross_fitted_rewards(arm, reward, {"pos": pos}, np.tile(np.arange(arms), (n, 1)),
                             n_folds=2, rng=np.random.default_rng(0))
    flipped = reward.copy()
    fold0 = np.random.default_rng(0).permutation(n) % 2 == 0
    flipped[fold0] = 1 - flipped[fold0]             # change every reward of fold 0 ...
    q2 = cross_fitted_rewards(arm, flipped, {"pos": pos}, np.tile(np.arange(arms), (n, 1)),
                              n_folds=2, rng=np.random.default_rng(0))
    assert np.array_equal(q2[fold0], q[fold0])       # ... fold 0 is predicted from fold 1 only
    assert not np.allclose(q2[~fold0], q[~fold0])    # and fold 1 from fold 0


# ---- ground truth on a simulator run ------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ope") / "run"
    run_experiment(tiny_run_config(), out)
    cfg = run_config(out)
    return out, json.loads((out / "metrics.json").read_text()), cfg, run_world(cfg)


@pytest.mark.parametrize("cell", ["uniform", "fixed", "oracle"])
def test_ground_truth_matches_the_run_metrics(run, cell):
    """On each cell's logged contexts, rebuilt from the log: the uniform policy's exact value is
    the cell's uniform_take_fraction, the oracle's its oracle_take_fraction, and the true
    probability of the logged images averages to its expected_take_fraction."""
    out, metrics, cfg, world = run
    m = metrics["cells"][cell]
    data = from_log(read_impressions(out, cell=cell, time_order=True), world.catalog, read_visit_contexts(out))
    p = true_rewards(world.response, data.decisions)
    assert len(data) == m["impressions"] > 1000
    uniform = build_target({"name": "uniform"}, world.catalog)
    v = expected_values(target_probabilities(uniform, data.decisions), p)
    assert v.sum() / len(data) == pytest.approx(m["uniform_take_fraction"], rel=1e-9)
    oracle = build_target({"name": "oracle"}, world.catalog, response=world.response)
    v_oracle = expected_values(target_probabilities(oracle, data.decisions), p)
    assert v_oracle.mean() == pytest.approx(m["oracle_take_fraction"], rel=1e-9)
    assert p[np.arange(len(data)), data.action].mean() == pytest.approx(m["expected_take_fraction"], rel=1e-9)
    assert (v_oracle >= v - 1e-12).all() and v_oracle.mean() > 1.05 * v.mean()
    if cell != "uniform":   # a deterministic logger's own value is what it showed
        logger = build_target({"name": cell}, world.catalog, response=world.response)
        v_logger = expected_values(target_probabilities(logger, data.decisions), p)
        assert v_logger.mean() == pytest.approx(m["expected_take_fraction"], rel=1e-9)


def test_estimates_on_the_uniform_cell_cover_the_truth(run):
    out, _, _, world = run
    data = from_log(read_impressions(out, cell="uniform", time_order=True), world.catalog, read_visit_contexts(out))
    p = true_rewards(world.response, data.decisions)
    dists, truth = {}, {}
    for name in ("fixed", "oracle"):
        probs = target_probabilities(build_target({"name": name}, world.catalog, response=world.response),
                                     data.decisions)
        dists[name], truth[name] = probs[:, :, None], expected_values(probs, p).mean()
    res = estimate_all(data.reward, data.action, data.pscore, dists, None,
                       data.estimated_rewards(np.random.default_rng(0)), rng=np.random.default_rng(1),
                       n_bootstrap=300)
    for name, by_est in res.items():
        for e in ("ipw", "snipw", "dr", "sndr"):
            est = by_est[e]
            assert est.ci_low < truth[name] < est.ci_high, (name, e, est, truth[name])
    # The direct method cannot see member tastes: it misses the oracle's personalisation.
    assert res["oracle"]["dm"].ci_high < truth["oracle"]


def test_online_value_reproduces_a_one_cell_run(tmp_path):
    config = tiny_run_config(("uniform",), days=0.5)
    metrics = run_experiment(config, tmp_path / "one")
    cell = online_value(run_config(tmp_path / "one"), {"name": "uniform"}, name="uniform")
    assert cell["impressions"] == metrics["cells"]["uniform"]["impressions"]
    assert cell["take_fraction"]["estimate"] == metrics["cells"]["uniform"]["take_fraction"]["estimate"]


# ---- the estimator contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_every_builtin_estimator_passes_the_conformance_checker(name):
    check_estimator(name)


@dataclass(frozen=True)
class LoggedMean(OffPolicyEstimator):
    """Ignores the target: the logging policy's own mean reward."""

    def _estimate_round_rewards(self, data: OffPolicyData):
        return data.reward


@dataclass(frozen=True)
class FirstPositionIPW(OffPolicyEstimator):
    """IPW that reads the target's probabilities at position 0 whatever the impression's position."""

    def _estimate_round_rewards(self, data: OffPolicyData):
        return data.action_dist[data.rows, data.action, 0] / data.pscore * data.reward


@dataclass(frozen=True)
class JitteredIPW(OffPolicyEstimator):
    """Unbiased, but draws from the global numpy RNG instead of the one it is given."""

    def _estimate_round_rewards(self, data: OffPolicyData):
        return data.weight * data.reward + np.random.normal(0.0, 1e-3, len(data))


@pytest.mark.parametrize("estimator, message", [
    (LoggedMean, "is biased under uniform logging"),
    (FirstPositionIPW, "is biased under uniform logging"),
    (JitteredIPW, "the same rng gave"),
])
def test_the_conformance_checker_rejects_broken_estimators(estimator, message):
    with pytest.raises(AssertionError, match=message):
        check_estimator(estimator)


def test_builtins_come_from_the_registry_with_their_needs_as_class_attributes():
    # The first six in the order of tables and charts; a new built-in module adds to the end.
    assert ESTIMATOR_NAMES[:6] == ("replay", "ipw", "snipw", "dm", "dr", "sndr")
    assert {"dm", "dr", "sndr"} <= set(MODEL_BASED) and not {"replay", "ipw", "snipw"} & set(MODEL_BASED)
    assert [ESTIMATORS[n].name for n in ESTIMATOR_NAMES] == list(ESTIMATOR_NAMES)
    # A class outside sim.ope.estimators is selected by import path, never registered by name.
    assert LoggedMean.name == "LoggedMean" and "LoggedMean" not in ESTIMATORS
    assert set(ESTIMATORS.names()) == set(ESTIMATOR_NAMES)


def test_estimator_hyperparameters_and_names_are_validated_with_the_key():
    with pytest.raises(ConfigError, match=r"ipw\.lambda_ = 0 is not allowed: a number > 0 or inf"):
        IPW(lambda_=0)
    assert IPW().lambda_ == np.inf and build_estimator("dr", lambda_=3.0).lambda_ == 3.0
    assert build_estimator("snipw", lambda_=3.0) == build_estimator("snipw")   # not its parameter
    with pytest.raises(ConfigError, match="did you mean 'ipw'"):
        build_estimator("ipx")
    with pytest.raises(ConfigError, match="did you mean 'lambda_'"):
        build_estimator({"name": "dr", "lambd": 2})
    with pytest.raises(ConfigError, match=r"a subclass of sim\.ope\.estimators\.(base\.)?OffPolicyEstimator"):
        build_estimator("tests.ope.test_ope.hand_case")


def test_obp_methods_agree_on_the_hand_case():
    case = hand_case()
    assert IPW().estimate_policy_value(**case) == pytest.approx(0.9, abs=1e-12)
    interval = ESTIMATORS["snipw"]().estimate_interval(**case, n_bootstrap_samples=100, random_state=0)
    assert interval["mean"] == pytest.approx(3.6 / 5.6, abs=1e-12)
    assert interval["95.0% CI (lower)"] <= interval["mean"] <= interval["95.0% CI (upper)"]
    # OBP's per-round rewards of a self-normalised estimator: w_i r_i / mean(w).
    data = ESTIMATORS["snipw"]().prepare(**case)
    assert ESTIMATORS["snipw"]()._estimate_round_rewards(data) == pytest.approx(
        np.array([2.0, 0.0, 1.6, 0.0]) / (5.6 / 4), abs=1e-12)


def test_a_user_estimator_runs_next_to_the_builtins_by_import_path():
    case = hand_case()
    kw = {k: case[k] for k in ("reward", "action", "pscore", "position")}
    res = estimate_all(**kw, action_dists={"target": case["action_dist"]},
                       estimators=["ipw", "tests.ope.test_ope.LoggedMean", IPW(lambda_=1.8)],
                       rng=np.random.default_rng(0), n_bootstrap=200)["target"]
    assert res["LoggedMean"].value == pytest.approx(0.5, abs=1e-12)   # mean of the logged rewards
    assert res["ipw"].value == pytest.approx(0.85, abs=1e-12)          # the instance given last wins
    assert res["LoggedMean"].ci_low <= 0.5 <= res["LoggedMean"].ci_high


# ---- the README's estimator example --------------------------------------------------------------------


def test_readme_estimator_example_works_as_printed(run, tmp_path, monkeypatch):
    """The README's "Writing your own estimator" code, as printed: the class, its check, and the
    evaluate command line with it (on this module's tiny run)."""
    module = readme_block("class BaselineIPW")
    (tmp_path / "my_estimators.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_estimators", None)
    check = readme_block("check_estimator(BaselineIPW")
    exec(compile(check, "README.md", "exec"), {})
    from my_estimators import BaselineIPW

    assert BaselineIPW().estimate_policy_value(**{k: v for k, v in hand_case().items()
                                                  if k != "estimated_rewards_by_reg_model"}) \
        == pytest.approx(0.9, abs=1e-12)                  # baseline 0: plain ipw
    command = readme_block("my_estimators.BaselineIPW", "bash")
    argv = shlex.split(command.replace("\\\n", " ").replace("<run dir>", str(run[0])))
    assert argv[:3] == ["python", "-m", "experiments.evaluate"]
    from experiments import evaluate

    assert evaluate.main(argv[3:] + ["--n-bootstrap", "100", "--out", str(tmp_path / "ope")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "ope" / "ope_estimates.csv")
    assert set(table["estimator"]) == {"ipw", "dr", "baseline_ipw"}
    ours = table[table["estimator"] == "baseline_ipw"].set_index("policy")
    plain = table[table["estimator"] == "ipw"].set_index("policy")
    assert (ours["ci_low"] <= ours["estimate"]).all() and (ours["estimate"] <= ours["ci_high"]).all()
    # baseline_ipw - ipw = b (1 - mean(w)), and the weights average to about 1: far below b = 0.01.
    assert (abs(ours["estimate"] - plain["estimate"]) < 0.002).all()
