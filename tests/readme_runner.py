"""Run every command of README.md at a tiny size, in one process: ``python -m tests.readme_runner OUT``.

Used by ``tests/experiments/test_readme_commands.py`` (one subprocess for all commands, so the
imports are paid once). Each command runs as typed, from the working directory ``OUT/work``,
with these changes (README, "The README is tested"):

* every ``python -m experiments.run`` gets :data:`TINY` appended (later values win in Hydra), its
  default run (sweep) directory gets a counter appended (two runs may start in one second), and
  a sweep (``-m``) keeps the first value of every swept list (``range(n)`` included; also the
  lists its experiment config sweeps), so it runs one job, in this process
  (``hydra/launcher=basic``, or the command's own ``hydra.launcher.n_jobs=1``);
* a run's own charts and analyses are not drawn (the README's ``experiments.plot``, ``report``
  and ``analyses`` commands draw them, once);
* placeholders name what earlier commands wrote: ``<run dir>``, ``<run>`` and ``<run or sweep
  dir>`` the first run of the default experiment, ``<sweep dir>`` the first sweep,
  ``multirun/<experiment>/<timestamp>`` that experiment's sweep; ``[--format md]`` is passed;
* commands in :data:`NOT_RUN` are not run, each for the reason given there.

Writes ``OUT/results.json``: per command its README line, the argv run, exit status, CPU
seconds and the end of its output.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shlex
import sys
import time
from pathlib import Path

#: Overrides that make a run tiny (documented in README).
TINY = ["world.n_members=300", "world.n_titles=40", "engine.days=0.25", "engine.progress=false"]
#: Commands that fail exactly as the README prints them (tests expect the failure, strictly: a
#: fixed README makes the test fail until the entry is removed), with the reason.
KNOWN_BROKEN: dict[str, str] = {}
#: Commands whose exit status is not 0 at a tiny size, by design: prefix -> (status, text the
#: output must hold, why).
TINY_STATUS = {
    "python -m sim.sessions_report": (1, "| figure | simulated |",
                                      "exits 1 when a figure is outside its published range, as a tiny world's are"),
}
#: Command prefixes that are not run, with the reason (checked: each must match a README command).
NOT_RUN = {
    "make run": "creates .venv and runs the default experiment: `python -m experiments.run` below is the same entry point",
    "make test": "runs this test suite",
    "make figures": "re-runs the experiments the figures come from (minutes); tests/experiments/test_readme_figures.py "
                    "checks README.md against the results file it writes",
    "pip install": "changes the environment",
    "pip download": "downloads a wheel (tests/world/test_movielens.py fetches it when it can, and skips otherwise)",
    "python -m experiments.bench": "minutes of CPU; tests/scale/test_bench.py runs its --large and worker sections at a tiny size",
    "python -m experiments.run world=movielens": "needs MovieLens 100k (not redistributable); tests/world/test_movielens.py "
                                                "builds the world from generated files in both layouts",
    "python -m experiments.run -m experiment=feedback_loop_arms world=movielens": "needs MovieLens 100k; the same "
                                                                                 "sweep on the dense world runs above",
    "python -m experiments.analyses.pipeline_faults": "the grid is 147 runs (about 15 CPU-minutes); "
                                                      "tests/experiments/test_pipeline_faults.py runs a tiny grid and its analysis",
    "python -m experiments.calibrate": "minutes of CPU and real data; tests/experiments/test_calibrate.py runs it on "
                                       "generated files",
    "python -m experiments.run --config-dir outputs/calibrate": "needs the files `experiments.calibrate --logs` writes; "
                                                               "tests/experiments/test_calibrate.py runs that pair",
    "python -m experiments.run -m hydra/launcher=ray": "starts a Ray instance (seconds of CPU); the Ray launcher is "
                                                      "checked by hand (README), the Ray backend by tests/scale",
    "RAY_ADDRESS=auto": "needs a running Ray cluster",
    "python -m experiments.run engine.backend=ray": "starts Ray actors; tests/scale/test_scale.py runs the Ray backend",
    "python -m experiments.ope_accuracy": "minutes of CPU; tests/ope/test_ope_data.py runs it with --quick",
}


def not_run_reason(command: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def first_value(value: str) -> str | None:
    """The first value of a sweep list (``a,b``, ``range(n)``); None if ``value`` is not a list."""
    r = re.fullmatch(r"range\((\d+)\)", value)
    return "0" if r else value.split(",")[0] if "," in value else None


def cut_sweep(args: list[str]) -> list[str]:
    """Every swept list of a sweep, on the command line or in its experiment's config
    (``hydra.sweeper.params``), cut to its first value: one job per sweep command."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        first = first_value(value) if eq and not key.startswith(("hydra", "-")) else None
        out.append(a if first is None else f"{key}={first}")
    experiment = next((a.partition("=")[2] for a in args if a.startswith("experiment=")), None)
    if experiment:
        import yaml

        from experiments.run import CONFIG_DIR

        path = Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml"
        params = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("sweeper", {}).get("params", {}) \
            if path.is_file() else {}
        given = {a.partition("=")[0] for a in args}
        # A key the command line sweeps replaces the config's list (as in Hydra), so it is not added.
        out += [f"{k}={first_value(str(v)) or v}" for k, v in params.items() if k not in given]
    return out


RUNS = iter(range(1, 10**6))


def own_directory(args: list[str]) -> list[str]:
    """The command's default run (or sweep) directory, ``.../<date>_<time>``, with a counter
    appended: Hydra names it by the second, and two commands in one second would share it."""
    key, root = ("hydra.sweep.dir", "multirun") if "-m" in args else ("hydra.run.dir", "outputs")
    if any(a.startswith(key + "=") for a in args):
        return []
    return [f"{key}={root}/${{experiment.name}}/${{now:%Y-%m-%d_%H-%M-%S}}_{next(RUNS):03d}"]


def tiny(args: list[str]) -> list[str]:
    if "--cfg" in args:
        return args
    if "-m" in args:
        # Its one job in this process: the basic launcher, or the command's own launcher settings
        # with one job (joblib runs a single job in the calling process, no workers to start).
        own = any(a.startswith("hydra.launcher.") for a in args)
        args = [re.sub(r"^hydra\.launcher\.n_jobs=\d+$", "hydra.launcher.n_jobs=1", a) for a in args]
        return cut_sweep(args) + TINY + own_directory(args) + ([] if own else ["hydra/launcher=basic"])
    return args + TINY + own_directory(args)


class Placeholders:
    """What earlier commands wrote, for ``<...>`` placeholders."""

    def __init__(self, work: Path):
        self.work = work

    def first(self, pattern: str) -> str:
        found = sorted(self.work.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no {pattern} under {self.work} (an earlier README command should write it)")
        return str(found[0])

    def fill(self, command: str) -> str:
        command = re.sub(r"(multirun/[^/ ]+)/<(?:timestamp|stamp)>", lambda m: self.first(f"{m.group(1)}/*"), command)
        command = re.sub(r"\S*<run>|<run dir>|<run or sweep dir>", lambda m: self.first("outputs/baselines/*"), command)
        return command.replace("<sweep dir>", self.first("multirun/baselines/*")) if "<sweep dir>" in command \
            else command


def argv_of(command: str, places: Placeholders) -> list[list[str]]:
    """The argv lists of a README command (``a && b`` is two), placeholders filled."""
    out = []
    for part in command.split("&&"):
        part = part.replace("[--format md]", "--format md")
        out.append(shlex.split(places.fill(part), comments=True))
    return out


def console_scripts() -> dict[str, str]:
    """pyproject.toml's console commands: name -> ``module:function``."""
    import tomllib

    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return tomllib.loads(path.read_text()).get("project", {}).get("scripts", {})


def run_module(argv: list[str], transcript: bool = False) -> tuple[int, str]:
    """``python -m <module> args`` (or a console command of pyproject.toml, whose function is
    called) in this process; (exit status, output). A ``transcript`` (a command the README shows
    with its output) runs exactly as typed."""
    scripts = console_scripts()
    entry = None
    if argv[:2] == ["python", "-m"]:
        module, args = argv[2], argv[3:]
    elif argv and argv[0] in scripts:
        entry = scripts[argv[0]]
        module, args = entry.split(":")[0], argv[1:]
    else:
        return 127, f"not run: {' '.join(argv[:3])} is neither `python -m <module>` nor a console command " \
                    "of pyproject.toml (add it to NOT_RUN in tests/readme_runner.py with a reason)"
    if module == "experiments.run" and not transcript:
        args = tiny(args)
    buf = io.StringIO()
    old = sys.argv
    sys.argv = [module, *args]
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            if entry is None:
                runpy.run_module(module, run_name="__main__", alter_sys=False)
            else:
                import importlib

                result = getattr(importlib.import_module(module), entry.split(":")[1])()
                code = result if isinstance(result, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code)
        except Exception as e:       # noqa: BLE001 -- reported as the command's failure
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.argv = old
    if module == "experiments.run" and transcript:
        time.sleep(1.05 - time.time() % 1)     # as typed, its directory is named by the second
    return code, buf.getvalue()


def main(out: Path, commands: list[tuple[int, str]]) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    sys.path.insert(0, str(work))              # "run from the directory holding it" (my_policies.py, ...)
    prepare(work)
    # Charts and analyses are drawn by the README's own plot/report/analysis commands, once.
    import experiments.analyses
    import experiments.plot
    experiments.plot.plot_run = lambda *a, **k: []
    experiments.analyses.run_analyses = lambda *a, **k: []
    places = Placeholders(work)
    results = []
    from tests.readme_examples import readme_transcripts

    shown = {c for _, c, _ in readme_transcripts()}
    for line, command in commands:
        reason = not_run_reason(command)
        if reason:
            results.append({"line": line, "command": command, "skipped": reason})
            continue
        try:
            argvs = argv_of(command, places)
        except (FileNotFoundError, ValueError) as err:     # nothing to fill a placeholder; bad quoting
            results.append({"line": line, "command": command, "argv": [], "status": 1, "cpu_seconds": 0.0,
                            "output": str(err)})
            continue
        for argv in argvs:
            t = time.process_time()
            code, text = run_module(argv, transcript=command in shown)
            results.append({"line": line, "command": command, "argv": argv, "status": code,
                            "cpu_seconds": round(time.process_time() - t, 2), "output": text[-3000:]})
            if code:
                break
    (out / "results.json").write_text(json.dumps(results, indent=1))


def prepare(work: Path) -> None:
    """The files README commands expect next to them: the example modules of the README's Python
    blocks (``# my_policies.py`` ...), their config files, and an Open Bandit Dataset CSV."""
    from tests.readme_examples import readme_blocks

    for _, body in readme_blocks("python") + readme_blocks("yaml"):
        first = body.splitlines()[0] if body.strip() else ""
        m = re.fullmatch(r"# (\S+\.(py|yaml))", first.strip())
        if m:
            path = work / m.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    from tests.ope.test_ope_data import obd_frame, write_obd

    write_obd(obd_frame(400, seed=3), work / "all.csv")


if __name__ == "__main__":
    target = Path(sys.argv[1])
    from tests.readme_examples import readme_commands

    main(target, readme_commands())
