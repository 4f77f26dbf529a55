"""Evaluate policies offline on a log with every estimator:
``python -m experiments.evaluate <run dir or log file> --policy NAME [--policy ...]``.

Examples::

    python -m experiments.evaluate outputs/baselines/<time> --policy fixed --policy thompson --policy oracle
    python -m experiments.evaluate outputs/baselines/<time> --policy epsilon_greedy,epsilon=0.05 --online
    python -m experiments.evaluate random/all/all.csv --policy uniform --policy thompson   # Open Bandit Dataset

``--policy`` takes a name (with the defaults of ``configs/policy/<name>.yaml``), optionally with
overrides (``ucb1,c=0.5``; nested keys with dots: ``explore,base.name=ucb1``), or the path of a
policy YAML file (``_target_`` classes work as in ``experiments.run``).

Estimators: every built-in by default; ``--estimators ipw,dr,my_package.MyEstimator`` picks
built-ins by name and your own :class:`~sim.ope.estimators.OffPolicyEstimator` subclasses by
import path; ``--estimator my_package.MyEstimator,key=value`` (repeatable) also sets
hyperparameters.

The log: a run directory (the rows of one cell, by default the experiment's control cell --
``uniform`` in ``experiment=baselines``), a native or Open Bandit Dataset CSV/Parquet file (see
:mod:`sim.ope.data`). Rows are in time order. Policies that learn (thompson, epsilon_greedy, ...)
are trained with one deploy on the first ``--train-fraction`` of the rows (default 0.5) and then
evaluated frozen; *every* policy is evaluated on the remaining rows, so all estimates refer to
the same impressions. ``--train-fraction 0`` evaluates learning policies untrained (at their prior)
on the whole log.

On a run directory the table also holds the truth: each policy's exact expected take fraction on
the same logged contexts (from the simulator's true probabilities), the relative error of each
estimate against it, and with ``--online`` the policy's take fraction when run in the closed loop.

Writes ``ope_estimates.csv`` and ``ope_estimates.png`` (estimates with 95 % bootstrap intervals,
truth marked) into ``--out`` (default: ``<run dir>/ope`` or ``<file>_ope`` next to the file), prints
the table and where the files are.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from experiments.ctrl_c import FILES_WHOLE, one_line_on_ctrl_c
from sim.config import ConfigError
from sim.ope.data import load_bandit_feedback
from sim.ope.estimators import ESTIMATOR_NAMES, OffPolicyEstimator, build_estimator, estimate_all
from sim.ope.groundtruth import expected_values, online_value, true_rewards
from sim.ope.logged import (LoggedData, build_target, from_bandit_feedback, from_log,
                            target_probabilities, train_target)
from sim.logs import read_impressions
from sim.ope.runs import read_visit_contexts, run_config, run_world
from sim.ope.validate import LogValidationError
from sim.outputs import write_csv

POLICY_DIR = Path(__file__).resolve().parent.parent / "configs" / "policy"


# ---- policies from the command line ---------------------------------------------------------------
def parse_policy(text: str) -> tuple[str, dict]:
    """``name[,key=value...]`` or a YAML path -> (label, policy config mapping)."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError("--policy", text, "a policy name or an existing YAML file")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            # safe_load: a !!python tag is refused, never executed.
            where = getattr(err, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError("--policy", text, f"a YAML mapping of policy keys (it does not parse{at}: "
                              f"{getattr(err, 'problem', None) or type(err).__name__})") from None
        if not isinstance(spec, dict):
            raise ConfigError("--policy", text, f"a YAML mapping of policy keys, e.g. name: thompson "
                              f"(the file holds a {type(spec).__name__})")
        return str(spec.get("name", path.stem)), spec
    name, *overrides = text.split(",")
    default = POLICY_DIR / f"{name}.yaml"
    spec = yaml.safe_load(default.read_text()) if default.is_file() else {"name": name}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--policy", text, "name,key=value,... (e.g. epsilon_greedy,epsilon=0.05)")
        node = spec
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--policy {key}", value, "a YAML value (number, string, list)") from None
    return text, spec


# ---- the evaluation -------------------------------------------------------------------------------
def load_source(source: Path, cell: str | None, n_actions: int | None):
    """(LoggedData, ground truth or None, description dict) for a run directory or a log file."""
    if (source / "config.yaml").is_file():
        cfg = run_config(source)
        if cell is None:
            metrics = source / "metrics.json"
            cell = (json.loads(metrics.read_text())["control"] if metrics.is_file()
                    else cfg.control)
        world = run_world(cfg)
        log = read_impressions(source, cell=cell, time_order=True)
        logger = ", ".join(sorted(map(str, log["policy"].unique()))) if len(log) else "?"
        lost = int((log["quality_play"] & ~log["reward"]).sum()) if len(log) else 0
        if lost:
            print(f"note: {lost} quality plays fell outside the attribution window; estimates target "
                  "the attributed reward, the truth is the true quality play", file=sys.stderr)
        return from_log(log, world.catalog, read_visit_contexts(source)), (cfg, world), {"source": str(source), "cell": cell,
                                                             "logging_policy": logger}
    bf = load_bandit_feedback(source, n_actions=n_actions)
    return from_bandit_feedback(bf), None, {"source": str(source), "cell": "", "logging_policy": "(file)"}


def evaluate(data: LoggedData, policies: list[tuple[str, dict]], truth, *, train_fraction: float,
             estimators: list, lambda_: float, n_bootstrap: int, seed: int, folds: int,
             online: bool) -> list[dict]:
    """Rows of the result table: one per (policy, estimator).

    ``estimators``: names, import paths or instances (:func:`sim.ope.estimators.build_estimator`);
    ``lambda_`` goes to those that declare it (ipw, dr).
    """
    built = [build_estimator(e, lambda_=lambda_) for e in estimators]
    train, test = data.split(train_fraction) if train_fraction > 0 else (data.subset(np.arange(0)), data)
    if not (isinstance(train_fraction, (int, float)) and 0 <= train_fraction < 1):
        raise ConfigError("--train-fraction", float(train_fraction), "a number in [0, 1)")
    if len(data) == 0:
        raise ValueError("the log holds no impressions (a header without rows?)")
    if len(test) == 0:
        raise ValueError("no impressions left to evaluate on: lower --train-fraction")
    cfg, world = truth if truth else (None, None)
    rewards = true_rewards(world.response, test.decisions) if world else None
    dists, info = {}, {}
    for i, (label, spec) in enumerate(policies):
        policy = build_target(spec, data.catalog, seed=seed + i,
                              response=world.response if world else None, key=f"--policy {label}")
        trained = train_target(policy, train)
        probs = target_probabilities(policy, test.decisions)
        dists[label] = probs[:, :, None]
        w = probs[np.arange(len(test)), test.action] / test.pscore
        info[label] = {"trained_on": len(train) if trained else 0,
                       "effective_sample_size": float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300)),
                       "truth": float(expected_values(probs, rewards).mean()) if world else math.nan}
        if online and cfg is not None:
            cell = online_value(cfg, spec, name=str(spec.get("name", "target")))
            info[label]["online_take_fraction"] = cell["take_fraction"]["estimate"]
    rng = np.random.default_rng(seed)
    q_hat = test.estimated_rewards(rng, folds) if any(e.needs_reward_model for e in built) else None
    results = estimate_all(test.reward, test.action, test.pscore, dists, None, q_hat,
                           estimators=built, rng=rng, n_bootstrap=n_bootstrap)
    clip = {e.name: getattr(e, "lambda_", math.inf) for e in built}
    rows = []
    for label, by_estimator in results.items():
        t = info[label]["truth"]
        for name, est in by_estimator.items():
            rows.append({"policy": label, "estimator": name, "estimate": est.value,
                         "ci_low": est.ci_low, "ci_high": est.ci_high, "truth": t,
                         "relative_error": (est.value - t) / t if t and math.isfinite(t) else math.nan,
                         "weight_clip": clip[name],
                         **{k: v for k, v in info[label].items() if k != "truth"},
                         "n_impressions": len(test)})
    return rows


# ---- output ---------------------------------------------------------------------------------------
def print_table(rows: list[dict], percent: bool) -> None:
    fmt = (lambda v: f"{v:.3%}") if percent else (lambda v: f"{v:.5g}")
    show = lambda v: fmt(v) if v is not None and math.isfinite(v) else "-"  # noqa: E731
    has_truth = any(math.isfinite(r["truth"]) for r in rows)
    has_online = any(r.get("online_take_fraction") is not None for r in rows)
    head = f"{'policy':<28}{'estimator':<10}{'estimate':>10}{'95% CI':>24}"
    head += f"{'truth':>10}{'rel. error':>12}" if has_truth else ""
    head += f"{'online':>10}" if has_online else ""
    print(head)
    for r in rows:
        line = (f"{r['policy'][:27]:<28}{r['estimator']:<10}{show(r['estimate']):>10}"
                f"{'[' + show(r['ci_low']) + ', ' + show(r['ci_high']) + ']':>24}")
        if has_truth:
            rel = r["relative_error"]
            line += f"{show(r['truth']):>10}{(f'{rel:+.1%}' if math.isfinite(rel) else '-'):>12}"
        if has_online:
            line += f"{show(r.get('online_take_fraction')):>10}"
        print(line)
    if has_online:
        print("online: the policy's take fraction when it runs in the closed loop (--online), same world and seed")


def plot(rows: list[dict], path: Path, title: str, ylabel: str, scale: float) -> Path:
    from experiments.plotting import plt, save

    policies = list(dict.fromkeys(r["policy"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(10, 1.8 * len(policies) + 4), 5.8))
    width = 0.8 / len(estimators)
    colors = plt.get_cmap("tab10").colors
    for j, e in enumerate(estimators):
        mine = {r["policy"]: r for r in rows if r["estimator"] == e}
        x = np.array([i + (j - (len(estimators) - 1) / 2) * width for i in range(len(policies))])
        y = np.array([mine[p]["estimate"] for p in policies]) * scale
        lo = np.array([mine[p]["ci_low"] for p in policies]) * scale
        hi = np.array([mine[p]["ci_high"] for p in policies]) * scale
        err = np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0)
        ax.errorbar(x, y, yerr=err, fmt="o", color=colors[j % 10], capsize=3, label=e)
    truth = {r["policy"]: r["truth"] for r in rows}
    online = {r["policy"]: r.get("online_take_fraction") for r in rows}
    for i, p in enumerate(policies):
        if math.isfinite(truth[p]):
            ax.hlines(truth[p] * scale, i - 0.45, i + 0.45, color="black", lw=2,
                      label="truth on the logged contexts" if i == 0 else None)
        if online[p] is not None:
            ax.hlines(online[p] * scale, i - 0.45, i + 0.45, color="grey", lw=1.5, ls=":",
                      label="online (closed loop)" if i == 0 else None)
    ax.set_xticks(range(len(policies)), policies, rotation=15 if len(policies) > 4 else 0)
    ax.set_xlabel("target policy")
    ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="estimator (95 % bootstrap CI)", fontsize=8, title_fontsize=8,
              loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save(fig, path)      # atomic write, the house resolution, closed


def parse_estimator(text: str) -> dict:
    """``name_or_import_path[,key=value...]`` -> an estimator config mapping."""
    what, *overrides = text.split(",")
    spec: dict = {"_target_" if "." in what else "name": what.strip()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--estimator", text, "name,key=value,... (e.g. ipw,lambda_=50)")
        spec[key.strip()] = yaml.safe_load(value)
    return spec


def _build_estimators(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[OffPolicyEstimator]:
    """``--estimators`` (names or import paths) then every ``--estimator``, built and validated
    before the log is read; ``--clip`` goes to those that declare ``lambda_``."""
    listed = args.estimators if args.estimators is not None or args.estimator else ",".join(ESTIMATOR_NAMES)
    specs = [e.strip() for e in (listed or "").split(",") if e.strip()]
    if not specs and not args.estimator:
        ap.error(f"--estimators: none given; known: {', '.join(ESTIMATOR_NAMES)}")
    built = []
    for option, spec in [("--estimators", e) for e in specs] + [("--estimator", e) for e in args.estimator or []]:
        try:
            built.append(build_estimator(parse_estimator(spec) if option == "--estimator" else spec,
                                         key=option, lambda_=args.clip))
        except ConfigError as err:
            if err.key.endswith(".lambda_") and "lambda_=" not in spec:
                ap.error(f"--clip {args.clip}: {err}")       # the clip came from --clip
            ap.error(str(err) if option == "--estimators" else f"{option} {spec}: {err}")
    names = [e.name for e in built]
    if len(set(names)) < len(names):
        ap.error(f"estimators must have distinct names, got {', '.join(names)}")
    return built


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


@one_line_on_ctrl_c(FILES_WHOLE)
def main(argv: list[str] | None = None) -> int:
    from experiments.cli_help import prog
    ap = OneLineParser(prog=prog("experiments.evaluate"),
                       description="Evaluate policies offline on a log with every estimator.")
    ap.add_argument("source", type=Path, help="run directory, or a CSV/Parquet log file")
    ap.add_argument("--policy", action="append", required=True,
                    help="target policy: name[,key=value...] or a policy YAML file (repeatable)")
    ap.add_argument("--cell", help="run directory: the logging cell (default: the control cell)")
    ap.add_argument("--train-fraction", type=float, default=0.5,
                    help="share of the log (by time) that trains learning policies (default 0.5)")
    ap.add_argument("--estimators", help="comma-separated built-in names or import paths of "
                    f"OffPolicyEstimator subclasses (default: {','.join(ESTIMATOR_NAMES)})")
    ap.add_argument("--estimator", action="append",
                    help="one estimator with hyperparameters: name_or_import_path[,key=value...], "
                         "e.g. ipw,lambda_=50 or my_estimators.BaselineIPW,baseline=0.01 (repeatable; "
                         "without --estimators only these are computed)")
    ap.add_argument("--clip", type=float, default=math.inf, help="clip importance weights of ipw and dr")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=2, help="cross-fitting folds of the reward model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-actions", type=int, help="number of actions of a CSV log (default: inferred)")
    ap.add_argument("--online", action="store_true", help="also run each policy in the closed loop")
    ap.add_argument("--out", type=Path, help="output directory")
    args = ap.parse_args(argv)
    for flag, value, ok, allowed in (
            ("--train-fraction", args.train_fraction, 0 <= args.train_fraction < 1, "a number in [0, 1)"),
            ("--n-bootstrap", args.n_bootstrap, args.n_bootstrap >= 0, "an integer >= 0"),
            ("--n-actions", args.n_actions, args.n_actions is None or args.n_actions >= 1, "an integer >= 1")):
        if not ok:   # NaN fails every comparison, so it is refused too
            print(f"error: {flag} = {value} is not allowed: {allowed}", file=sys.stderr)
            return 2
    estimators = _build_estimators(ap, args)
    if not args.source.exists():
        ap.error(f"{args.source} does not exist")
    try:
        policies = [parse_policy(p) for p in args.policy]
        data, truth, about = load_source(args.source, args.cell, args.n_actions)
        if len(data) and (data.pscore == 1).all():
            print("warning: every logged propensity is 1 (the logging policy never explored); "
                  "estimates for other policies only see the logged choices", file=sys.stderr)
        rows = evaluate(data, policies, truth, train_fraction=args.train_fraction, estimators=estimators,
                        lambda_=args.clip, n_bootstrap=args.n_bootstrap, seed=args.seed,
                        folds=args.folds, online=args.online)
    except (ConfigError, LogValidationError, ValueError, OSError, KeyError, pa.ArrowException) as err:
        # ValueError covers Arrow's ArrowInvalid; OSError a truncated Parquet part of a run.
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        plain = isinstance(err, ValueError) and not isinstance(err, pa.ArrowException)
        print(f"error: {text}" if plain else f"error: {type(err).__name__}: {text}", file=sys.stderr)
        return 2
    out = args.out or (args.source / "ope" if args.source.is_dir()
                       else args.source.with_name(args.source.stem + "_ope"))
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r.update(about)
    write_csv(out / "ope_estimates.csv", rows)
    binary = bool(np.isin(data.reward, (0.0, 1.0)).all())
    what = "take fraction" if truth else "mean reward"
    n = rows[0]["n_impressions"]
    title = (f"Offline estimates on {n:,} logged impressions"
             + (f" of cell '{about['cell']}' (logged by {about['logging_policy']})" if about["cell"] else "")
             + f"\n{args.source}")
    chart = plot(rows, out / "ope_estimates.png", title,
                 f"{what} per impression (%)" if binary else f"{what} per impression",
                 100.0 if binary else 1.0)
    print(f"{n:,} impressions evaluated from {about['source']}"
          + (f" (cell {about['cell']}, logged by {about['logging_policy']})" if about["cell"] else "")
          + (f"; learning policies trained on the first {args.train_fraction:.0%}" if args.train_fraction else ""))
    print_table(rows, binary)
    print(f"\ntable: {out / 'ope_estimates.csv'}\nchart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
