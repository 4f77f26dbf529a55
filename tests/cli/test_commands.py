"""Console commands: pyproject's scripts point at existing callables, each answers ``--help``,
``homesim --help`` lists the groups, options and keys, and bash tab completion works."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from experiments import config_store  # noqa: F401 -- registers the schema
from experiments.cli_help import MOST_USED_KEYS
from experiments.run import CONFIG_DIR
from sim.config import POLICIES, RANKERS, RESPONSE_MODELS

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
ARGPARSE_COMMANDS = ["homesim-plot", "homesim-report", "homesim-evaluate", "homesim-power",
                     "homesim-calibrate", "homesim-bench", "homesim-gym-bench"]


def entry_point(command: str):
    module, _, attr = SCRIPTS[command].partition(":")
    return getattr(importlib.import_module(module), attr)


def test_every_command_of_the_issue_is_declared():
    assert set(SCRIPTS) >= {"homesim", *ARGPARSE_COMMANDS}
    assert SCRIPTS["homesim"] == "experiments.run:cli"


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_scripts_point_at_callables(command):
    assert callable(entry_point(command))


@pytest.mark.parametrize("command", ARGPARSE_COMMANDS)
def test_each_command_answers_help(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as exit_:
        entry_point(command)(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command} ") and "--help" in out
    # The same function started as `python -m module` names itself that way.
    module = SCRIPTS[command].partition(":")[0]
    monkeypatch.setattr(sys, "argv", [str(REPO / (module.replace(".", "/") + ".py")), "--help"])
    with pytest.raises(SystemExit):
        entry_point(command)(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_a_benchmark_command_that_succeeds_exits_with_status_0(capsys):
    """A console script runs ``sys.exit(main())``: a ``main`` that returned its figures (a dict)
    printed them to stderr and exited with status 1."""
    result = entry_point("homesim-gym-bench")(["--steps", "3", "--visits", "64", "--num-envs", "64"])
    with pytest.raises(SystemExit) as exit_:
        sys.exit(result)
    assert exit_.value.code in (None, 0)
    assert "HomepageVectorEnv" in capsys.readouterr().out


@pytest.fixture(scope="module")
def homesim(tmp_path_factory) -> Path:
    """A ``homesim`` executable on a private PATH: what pip writes for the console script."""
    bin_dir = tmp_path_factory.mktemp("bin")
    exe = bin_dir / "homesim"
    module, _, attr = SCRIPTS["homesim"].partition(":")
    exe.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n")
    exe.chmod(0o755)
    return bin_dir


def shell_env(bin_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def yaml_comment(path: Path) -> str:
    """The first comment line of a config file that is not Hydra's ``@package`` line."""
    return next(line.lstrip("# ").strip() for line in path.read_text().splitlines()
                if line.startswith("#") and "@package" not in line)


def test_homesim_help_lists_groups_options_and_keys(homesim):
    res = subprocess.run(["homesim", "--help"], env=shell_env(homesim), cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "Powered by Hydra" not in text and "homesim -sc install=bash" in text
    lines = text.splitlines()
    sections: dict[str, list[str]] = {}      # group -> its option lines
    for line in lines:
        head = line.split(":")[0]
        if line and not line.startswith(" ") and head in ("experiment", "world", "world/response", "policy",
                                                          "ranker", "engine"):
            group = sections.setdefault(head, [])
        elif line.startswith("  ") and sections:
            group.append(line)

    def option_line(group: str, option: str) -> str | None:
        return next((x for x in sections.get(group, []) if x.split()[:1] == [option]), None)

    for group, names in (("policy", POLICIES.names()), ("ranker", RANKERS.names()),
                         ("world/response", RESPONSE_MODELS.names())):
        for name in names:
            assert option_line(group, name), (group, name)
    for path in sorted(Path(CONFIG_DIR).glob("*/*.yaml")):
        if path.parent.name == "hydra":
            continue
        line = option_line(path.parent.name, path.stem)
        assert line is not None, path
        # The description is the YAML's own first comment (its first words, at least).
        assert " ".join(yaml_comment(path).split()[:4]) in line, (path, line)
    assert "Beta-Bernoulli Thompson sampling per (title, artwork)." in text   # ThompsonPolicy's docstring
    for key in MOST_USED_KEYS:
        assert any(line.strip().startswith(f"{key}=") for line in lines), key


def test_most_used_keys_exist_in_the_composed_config():
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config")
    missing = object()
    for key in MOST_USED_KEYS:
        assert OmegaConf.select(cfg, key, default=missing) is not missing, key


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_installs_and_completes_group_options(homesim):
    script = """
    set -e
    eval "$(homesim -sc install=bash)"
    complete -p homesim
    for line in "homesim experiment=cold_start world=t"; do
        COMP_LINE="$line"; COMP_POINT=${#COMP_LINE}; COMP_CWORD=$(( $(echo $line | wc -w) - 1 ))
        hydra_bash_completion
        echo "reply: ${COMPREPLY[*]}"
    done
    """
    res = subprocess.run(["bash", "-c", script], env=shell_env(homesim), cwd=REPO, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert any("-F hydra_bash_completion homesim" in line for line in out), res.stdout
    # Hydra answers with the world options; bash keeps those that start with what was typed.
    assert [line for line in out if line.startswith("reply:")] == ["reply: world=tiny"], res.stdout
