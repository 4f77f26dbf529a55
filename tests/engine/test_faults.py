"""The production pipeline's faults and repairs (sim.pipeline): each repair undoes its fault,
no fault crashes a run, and runs with faults stay deterministic and shard-invariant."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.config import ConfigError, experiment_config_from_dict
from sim.logs import PIPELINE_COLUMNS, read_impressions
from sim.pipeline.config import FAULT_NAMES, FaultsConfig
from sim.pipeline.fallback import FallbackPolicy
from sim.pipeline.report import COUNTERS, report, skew_minutes
from sim.policies import DecisionBatch, build_policy
from sim.runner import run_experiment
from tests.conftest import assert_same_logs, shard_prefixes, tiny_config

WINDOW, THRESHOLD = 120.0, 10.0


def served(n: int = 2000, seed: int = 0, per_visit: int = 5):
    """A synthetic served batch: n impressions, 5 per visit, every third one played (click 1
    minute, play 3 minutes after the impression), half of those a quality play; all inside the
    attribution window, so the perfect pipeline credits exactly the true outcomes."""
    rng = np.random.default_rng(seed)
    K = 4
    candidates = np.arange(n * K, dtype=np.int32).reshape(n, K)
    d = DecisionBatch(member=rng.integers(0, 500, n).astype(np.int32), title=rng.integers(0, 50, n).astype(np.int32),
                      candidates=candidates, mask=np.ones((n, K), bool), row=np.zeros(n, np.int16),
                      column=(np.arange(n) % per_visit).astype(np.int16), time=np.full(n, 100.0),
                      familiar=np.zeros(n, bool), visit=np.arange(n) // per_visit)
    play = np.arange(n) % 3 == 0
    action = rng.integers(0, K, n)
    return SimpleNamespace(decisions=d, action=action, artwork=candidates[np.arange(n), action],
                           propensity=np.full(n, 1.0 / K), click=play.copy(), play=play,
                           quality_play=play & (np.arange(n) % 2 == 0),
                           click_time=d.time + 1.0, play_time=d.time + 3.0)


def run_report(s, seed: int = 1, **faults):
    return report(s, FaultsConfig(**faults), np.random.default_rng(seed), WINDOW, THRESHOLD)


def test_perfect_pipeline_reports_the_truth():
    s = served()
    r = run_report(s)
    assert np.array_equal(r.rows, np.arange(s.action.size))
    assert np.array_equal(r.quality_play, s.quality_play) and np.array_equal(r.click, s.click)
    assert r.counts.sum() == 0


def test_dedup_removes_the_rows_duplicated_events_add():
    s = served()
    faulty = run_report(s, duplicate=0.5)
    fixed = run_report(s, duplicate=0.5, dedup=True)
    # Duplicates fan the join out: more rows, each extra one an engaged impression.
    assert faulty.rows.size > s.action.size + 300
    assert faulty.quality_play.mean() > s.quality_play.mean() + 0.02
    assert np.array_equal(fixed.rows, np.arange(s.action.size))
    assert np.array_equal(fixed.quality_play, s.quality_play)
    assert fixed.counts[:, COUNTERS.index("repair_dedup")].sum() == faulty.rows.size - s.action.size


def test_require_render_discards_unrendered_rows():
    s = served()
    faulty = run_report(s, unrendered=0.3)
    fixed = run_report(s, unrendered=0.3, require_render=True)
    phantoms = int(faulty.counts[:, COUNTERS.index("unrendered")].sum())
    assert 500 < phantoms < 700                       # 0.3 * 2000 = 600, se ~20
    assert faulty.rows.size == s.action.size + phantoms and (~faulty.rendered).sum() == phantoms
    assert not faulty.quality_play[~faulty.rendered].any()
    assert np.array_equal(fixed.rows, np.arange(s.action.size)) and fixed.rendered.all()
    assert np.array_equal(fixed.quality_play, s.quality_play)


def test_join_by_id_undoes_clock_skew():
    s = served()
    faulty = run_report(s, clock_skew=1.0, clock_skew_minutes=180.0)
    fixed = run_report(s, clock_skew=1.0, clock_skew_minutes=180.0, join_by_id=True)
    # Every device is 3 hours off, beyond the 2-hour window either way: nothing is credited.
    assert not faulty.quality_play.any() and s.quality_play.sum() > 300
    assert np.array_equal(fixed.quality_play, s.quality_play)
    skew = skew_minutes(np.arange(4000), 0.25, 60.0)
    assert abs((skew != 0).mean() - 0.25) < 0.03 and set(np.unique(skew)) == {-60.0, 0.0, 60.0}


def test_join_by_id_undoes_misattribution():
    s = served()
    faulty = run_report(s, misattribution=1.0)
    fixed = run_report(s, misattribution=1.0, join_by_id=True)
    # Played impressions are every third; their credit moves to a neighbouring tile.
    moved = int(faulty.counts[:, COUNTERS.index("misattributed")].sum())
    assert moved == s.play.sum()
    assert (faulty.quality_play & s.quality_play).sum() < 0.1 * s.quality_play.sum()
    assert np.array_equal(fixed.quality_play, s.quality_play)
    assert fixed.counts[:, COUNTERS.index("repair_join_by_id")].sum() == moved


def with_previous_images(s):
    """``s`` with the image each member saw before (``last_artwork``): for impression i, pool
    slot (action + 2) % K -- a different image -- except every 4th impression (never shown
    before: -1) and every 5th (shown before with the same image). Returns (s, previous slot)."""
    n, K = s.action.size, s.decisions.candidates.shape[1]
    slot = (s.action + 2) % K
    slot[np.arange(n) % 5 == 0] = s.action[np.arange(n) % 5 == 0]
    last = s.decisions.candidates[np.arange(n), slot].astype(np.int32)
    last[np.arange(n) % 4 == 1] = -1
    return SimpleNamespace(**{**vars(s), "decisions": dataclasses.replace(s.decisions, last_artwork=last)}), slot


def test_join_by_id_undoes_misattribution_to_the_previous_image():
    s, slot = with_previous_images(served())
    n = s.action.size
    faulty = run_report(s, misattribution=1.0, misattribution_to="previous_image")
    fixed = run_report(s, misattribution=1.0, misattribution_to="previous_image", join_by_id=True)
    # Every play of a title shown before with another image names that image, with the play.
    eligible = s.play & (np.arange(n) % 4 != 1) & (np.arange(n) % 5 != 0)
    assert eligible.sum() > 300
    assert np.array_equal(faulty.rows, np.arange(n))
    assert np.array_equal(faulty.artwork != s.artwork, eligible)
    assert np.array_equal(faulty.artwork[eligible], s.decisions.last_artwork[eligible])
    assert np.array_equal(faulty.action[eligible], slot[eligible])
    assert np.array_equal(faulty.action[~eligible], s.action[~eligible])
    assert np.array_equal(faulty.quality_play, s.quality_play)         # the events stay with the row
    assert faulty.counts[:, COUNTERS.index("misattributed")].sum() == eligible.sum()
    fb = faulty.feedback(s)
    assert np.array_equal(fb.artwork, faulty.artwork) and np.array_equal(fb.action, faulty.action)
    # The repair: every row credits the image served.
    assert np.array_equal(fixed.artwork, s.artwork) and np.array_equal(fixed.action, s.action)
    assert fixed.counts[:, COUNTERS.index("repair_join_by_id")].sum() == eligible.sum()
    # At a rate, a share of the eligible plays (0.3 * eligible, binomial standard error).
    part = run_report(s, misattribution=0.3, misattribution_to="previous_image")
    k, m = int((part.artwork != s.artwork).sum()), int(eligible.sum())
    assert abs(k - 0.3 * m) < 4 * np.sqrt(0.21 * m)
    # An event lost before the join cannot be mis-joined.
    lost = run_report(s, event_loss=1.0, misattribution=1.0, misattribution_to="previous_image")
    assert np.array_equal(lost.artwork, s.artwork)


def test_loss_and_late_events_lose_credit_and_no_repair_hides_it():
    s = served()
    lost = run_report(s, event_loss=0.2)
    late = run_report(s, late=0.5, late_scale_minutes=200.0)
    share = lost.quality_play.sum() / s.quality_play.sum()
    assert abs(share - 0.8) < 4 * np.sqrt(0.16 / s.quality_play.sum())
    assert late.quality_play.sum() < 0.8 * s.quality_play.sum()
    assert late.counts[:, COUNTERS.index("events_late")].sum() > 0


@pytest.mark.parametrize("as_policy", [False, True])
def test_rendered_propensity_repairs_the_fallback_bug(world, as_policy):
    """Uniform policy over K images, timeout rate r: the image rendered is the default (slot 0)
    with probability (1 - r) / K + r, any other with (1 - r) / K. The bug logs 1 / K for every
    row; truthful logging and the repair log the mixture."""
    r = 0.3
    cat = world.catalog
    title = np.flatnonzero((cat.pool >= 0).sum(axis=1) >= 3)[:1].repeat(4000).astype(np.int32)
    n, K = title.size, int((cat.pool[title[0]] >= 0).sum())
    d = DecisionBatch(member=np.zeros(n, np.int32), title=title, candidates=cat.pool[title],
                      mask=cat.pool[title] >= 0, row=np.zeros(n, np.int16), column=np.zeros(n, np.int16),
                      time=np.zeros(n), familiar=np.zeros(n, bool))
    policy = build_policy({"name": "uniform"})
    policy.reset(cat)
    sel_bug = FallbackPolicy(policy, r, True, False, np.random.default_rng(3)).select(d, np.random.default_rng(4))
    wrapped = FallbackPolicy(policy, r, as_policy, True, np.random.default_rng(3))
    sel = wrapped.select(d, np.random.default_rng(4))
    assert np.array_equal(sel.action, sel_bug.action)
    assert abs((sel.action == 0).mean() - ((1 - r) / K + r)) < 4 * np.sqrt(0.25 / n)
    assert abs(wrapped.fallback.mean() - r) < 4 * np.sqrt(0.25 / n)
    expected = np.where(sel.action == 0, (1 - r) / K + r, (1 - r) / K)
    assert np.allclose(sel.propensity, expected)
    assert np.allclose(sel_bug.propensity, 1.0 / K)
    # IPW value of the uniform policy for the reward "the default image was shown" (truth 1/K):
    # right with the rendered propensity, off by r (1 - 1/K) with the bug's.
    reward = (sel.action == 0).astype(float)
    se = 4 * np.sqrt(0.25 / n) * K
    assert abs(np.mean(reward * (1.0 / K) / sel.propensity) - 1.0 / K) < se
    assert np.mean(reward * (1.0 / K) / sel_bug.propensity) - 1.0 / K > r * (1 - 1.0 / K) - se


def test_faults_config_is_validated_and_off_by_default():
    assert not FaultsConfig().active
    assert FaultsConfig(dedup=True).active and FaultsConfig(late=0.01).active
    with pytest.raises(ConfigError, match=r"engine\.faults\.event_loss = 1\.5 .*\[0, 1\]"):
        experiment_config_from_dict({"engine": {"faults": {"event_loss": 1.5}}})
    with pytest.raises(ConfigError, match=r"engine\.faults\.dupes .*did you mean 'dedup'|duplicate"):
        experiment_config_from_dict({"engine": {"faults": {"dupes": 0.1}}})


ALL_FAULTS = {**{name: 0.2 for name in FAULT_NAMES}, "fallback_logged_as_policy": True}


def faulty_config(**engine):
    return tiny_config(policies=("uniform", "thompson"),
                       engine={"faults": dict(ALL_FAULTS), "member_block": 16, "days": 0.5, **engine})


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "one"
    run_experiment(faulty_config(), out, progress=False)
    return out


def test_every_fault_at_20_percent_runs_and_is_counted(faulty_run):
    m = json.loads((faulty_run / "metrics.json").read_text())
    total = m["faults"]["total"]
    for name in ("unrendered", "unlogged", "events_lost", "fallback", "out_of_order"):
        assert total[name] > 0, name
    assert m["faults"]["config"]["late"] == 0.2
    log = read_impressions(faulty_run)
    assert set(PIPELINE_COLUMNS) <= set(log.columns) and (~log["rendered"]).any()
    header = (faulty_run / "timeseries.csv").read_text().splitlines()[0].split(",")
    assert all(f"fault_{c}" in header for c in COUNTERS)
    # The truth is not faulted: every impression served is counted once in the metrics.
    assert m["impressions"] == sum(c["impressions"] for c in m["cells"].values())


def test_faults_are_deterministic_and_shard_invariant(faulty_run, tmp_path):
    again = tmp_path / "sharded"
    run_experiment(faulty_config(shards=3), again, progress=False)
    assert (faulty_run / "metrics.json").read_bytes() == (again / "metrics.json").read_bytes()
    assert (faulty_run / "timeseries.csv").read_bytes() == (again / "timeseries.csv").read_bytes()
    assert len(shard_prefixes(again)) == 3           # three shards wrote parts, read in log order
    assert_same_logs(faulty_run, again)
    other = tmp_path / "seed2"
    cfg = faulty_config()
    cfg["seed"] = 2
    run_experiment(cfg, other, progress=False)
    assert (faulty_run / "metrics.json").read_bytes() != (other / "metrics.json").read_bytes()


PREVIOUS = {"misattribution": 0.5, "misattribution_to": "previous_image"}


def test_misattribution_to_previous_image_credits_the_image_seen_before(tmp_path):
    """A non-learning policy serves the same pages with and without the repair (the ranker
    trains on true outcomes), so the repaired log is what was served: each row whose image the
    faulty log changed names the image the member was served at their last impression of the
    title in an earlier serving window."""
    logs, counts = {}, {}
    for name, repair in (("faulty", False), ("fixed", True)):
        cfg = tiny_config(policies=("uniform",), engine={"faults": {**PREVIOUS, "misattribution": 1.0,
                                                                 "join_by_id": repair}})
        run_experiment(cfg, tmp_path / name, progress=False)
        logs[name] = read_impressions(tmp_path / name)
        counts[name] = json.loads((tmp_path / name / "metrics.json").read_text())["faults"]["total"]
    faulty, fixed = logs["faulty"], logs["fixed"]
    assert len(faulty) == len(fixed)
    assert faulty.drop(columns=["artwork", "action"]).equals(fixed.drop(columns=["artwork", "action"]))
    changed = np.flatnonzero(faulty["artwork"].to_numpy() != fixed["artwork"].to_numpy())
    assert changed.size >= 5 and changed.size == counts["faulty"]["misattributed"]
    assert counts["fixed"]["repair_join_by_id"] == changed.size
    assert fixed["play"].to_numpy()[changed].all()
    window = experiment_config_from_dict(tiny_config(policies=("uniform",))).engine.window_minutes
    served_ = fixed.sort_values("time", kind="stable")
    for i in changed:
        row = fixed.iloc[i]
        start = np.floor(row["time"] / window) * window
        before = served_[(served_["member"] == row["member"]) & (served_["title"] == row["title"])
                         & (served_["time"] < start)]
        assert len(before) and before["artwork"].iloc[-1] == faulty["artwork"].iloc[i] != row["artwork"]


def test_misattribution_to_previous_image_is_deterministic_and_shard_invariant(tmp_path):
    runs = {}
    for name, shards in (("one", 1), ("three", 3)):
        cfg = tiny_config(policies=("uniform", "thompson"),
                          engine={"days": 0.5, "member_block": 16, "shards": shards, "faults": PREVIOUS})
        run_experiment(cfg, tmp_path / name, progress=False)
        runs[name] = tmp_path / name
    m = json.loads((runs["one"] / "metrics.json").read_text())
    assert m["faults"]["total"]["misattributed"] > 0
    assert m["faults"]["config"]["misattribution_to"] == "previous_image"
    assert (runs["one"] / "metrics.json").read_bytes() == (runs["three"] / "metrics.json").read_bytes()
    assert (runs["one"] / "timeseries.csv").read_bytes() == (runs["three"] / "timeseries.csv").read_bytes()
    assert_same_logs(runs["one"], runs["three"], ("logs",))


def test_faults_off_adds_no_columns_and_draws_nothing(tmp_path):
    plain, zeros = tmp_path / "plain", tmp_path / "zeros"
    run_experiment(tiny_config(policies=("thompson",), engine={"days": 0.25}), plain, progress=False)
    run_experiment(tiny_config(policies=("thompson",), engine={"days": 0.25, "faults": {n: 0.0 for n in FAULT_NAMES}}),
                   zeros, progress=False)
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (plain, zeros))
    assert "faults" not in a and "faults" not in b
    assert a["cells"] == b["cells"]
    assert (plain / "timeseries.csv").read_bytes() == (zeros / "timeseries.csv").read_bytes()
    assert pq.read_table(plain / "logs").equals(pq.read_table(zeros / "logs"))
    assert not set(PIPELINE_COLUMNS) & set(read_impressions(plain).columns)


def _fault_cases():
    import dataclasses
    import typing

    from tests.cli.test_reliability import _bad_values

    hints = typing.get_type_hints(FaultsConfig)
    return [pytest.param(f.name, v, id=f"{f.name}={v!r}") for f in dataclasses.fields(FaultsConfig)
            for v in _bad_values(f, hints[f.name])]


@pytest.mark.parametrize("name,value", _fault_cases())
def test_every_faults_key_refuses_values_outside_its_declaration(name, value):
    with pytest.raises(ConfigError) as err:
        experiment_config_from_dict({"engine": {"faults": {name: value}}})
    assert err.value.key == f"engine.faults.{name}"
