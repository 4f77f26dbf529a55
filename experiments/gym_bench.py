"""Steps per second of the Gymnasium environment: ``homesim-gym-bench`` (or
``python -m experiments.gym_bench``).

Prints visits (steps) per second of :class:`sim.gym.HomepageEnv` (one visit per step) and of
:class:`sim.gym.HomepageVectorEnv` at several ``num_envs`` (visits per step), with random
actions, on the environment's default world (2,000 members, 60 titles, a 4 x 6 page), one
thread. Both wall-clock and CPU-time rates are printed: on a shared machine the CPU rate is the
one that does not depend on the other processes.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from experiments.ctrl_c import NOTHING_WRITTEN, one_line_on_ctrl_c  # noqa: E402
from sim.outputs import atomic_write_text  # noqa: E402


def rate(env, steps: int, visits_per_step: int, seed: int = 0) -> dict:
    """Visits per second over ``steps`` steps of random actions (episodes restart as needed)."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if np.any(truncated) or np.any(terminated):
            env.reset()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    visits = steps * visits_per_step
    return {"visits": visits, "visits_per_s_wall": visits / wall, "visits_per_s_cpu": visits / cpu}


def table(rows: list[dict]) -> str:
    """The printed table: one line per environment and visits per step, wall and CPU rates."""
    lines = [f"{'environment':<20}{'visits/step':>12}{'visits':>10}{'visits/s (wall)':>18}{'visits/s (CPU)':>17}"]
    lines += [f"{row['env']:<20}{row['num_envs']:>12,}{row['visits']:>10,}{row['visits_per_s_wall']:>18,.0f}"
              f"{row['visits_per_s_cpu']:>17,.0f}" for row in rows]
    return "\n".join(lines) + "\n"


@one_line_on_ctrl_c(NOTHING_WRITTEN)
def main(argv: list[str] | None = None) -> None:
    from experiments.cli_help import prog
    ap = argparse.ArgumentParser(prog=prog("experiments.gym_bench"), description="Visits (steps) per second of the Gymnasium environment")
    ap.add_argument("--steps", type=int, default=1000, help="steps of the single-visit environment")
    ap.add_argument("--visits", type=int, default=20_000, help="visits per vectorized measurement")
    ap.add_argument("--num-envs", default="64,256,1024", help="visits per step of the vectorized environment")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from sim.gym import HomepageEnv, HomepageVectorEnv

    rows = []
    r = rate(HomepageEnv(), args.steps, 1)
    rows.append({"env": "HomepageEnv", "num_envs": 1, **r})
    for n in (int(x) for x in args.num_envs.split(",")):
        env = HomepageVectorEnv(n)
        rows.append({"env": "HomepageVectorEnv", "num_envs": n, **rate(env, max(1, args.visits // n), n)})
    print(table(rows), end="")
    report = {"rows": rows, "load_average": os.getloadavg()}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
