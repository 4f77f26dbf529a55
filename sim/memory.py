"""A memory estimate of a run, made from its config before the world is built.

:func:`check_memory` refuses a run whose estimate exceeds the machine's available memory (or
``engine.memory_limit_gb`` when set: the explicit override), naming the key that contributes
most, its value, the estimate and the limit; and warns when ``engine.shards`` exceeds the CPUs.

The estimate counts the large arrays (member state, catalog, one serving window's candidate
tensors, each policy's deploy-time draws, shard processes) -- a floor, not a bound: Python
objects and temporaries come on top, which is why a run is refused only above the limit.
"""
from __future__ import annotations

import os
import sys

from sim.schema import ConfigError

GB = 1024 ** 3
#: Interpreter, NumPy, Arrow, SimPy: what one (driver or worker) process holds before any array.
PROCESS_BASE = 200 * 1024 ** 2


def available_memory() -> int | None:
    """Bytes the kernel reports available (MemAvailable), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _proc_status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    now = _proc_status_mb("VmRSS")
    return float("nan") if now is None else now


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Unlike ``ru_maxrss``, it starts afresh in a
    new program: a child started by this one does not report this one's peak."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource     # Unix only; where /proc is missing

    kb = 1024.0 if sys.platform == "darwin" else 1.0     # ru_maxrss: bytes on macOS, KB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb / 1024.0


def reset_peak_rss() -> bool:
    """Start this process's peak (VmHWM) afresh from its current RSS (Linux 4.0+); False where
    that is not possible, and the peak then still includes everything before."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def estimate(cfg) -> dict[str, int]:
    """Bytes per part of a run of ``cfg`` (an :class:`sim.config.ExperimentConfig`), keyed by the
    config key that drives each part."""
    from sim.config import POLICIES
    from sim.schema import resolve_spec

    w, e = cfg.world, cfg.engine
    M, T, G = w.n_members, w.n_titles, w.n_genres
    K = w.artworks_max
    A = T * (w.artworks_min + w.artworks_max) / 2
    parts: dict[str, float] = {}
    # Member state: genre plays and tastes (float32), history ring, shown-image ring (3 arrays),
    # per-member scalars.
    parts["world.n_members"] = M * (8 * G + 4 * w.history_length + 12 * w.shown_memory + 64)
    parts["world.n_titles"] = T * (4 * G + 4 * K + 64) + A * (4 * G + 32) * (1 + len(cfg.cells))
    # One serving window: visits x page slots x candidate images x genres (float32 scores).
    rows = getattr(cfg.ranker.params, "rows", 10)
    columns = getattr(cfg.ranker.params, "columns", 8)
    visits = M * w.visits_per_day * e.window_minutes / 1440.0
    parts["engine.window_minutes"] = visits * rows * columns * K * (4 * G + 24) / max(e.shards, 1)
    for i, cell in enumerate(cfg.cells):
        try:
            spec = resolve_spec(POLICIES, cell.policy, f"experiment.cells[{i}].policy")
        except ConfigError:
            continue   # refused later, with its own message
        draws = getattr(spec.params, "n_draws", None)
        if draws:
            # Thompson-type deploys draw (titles in a chunk, artworks, n_draws) doubles, at least
            # one title at a time; linear ones (n_draws, features).
            parts[f"policy.n_draws ({cell.name})"] = 3 * 8 * K * draws + 8 * draws * (3 * G + 32)
    workers = e.shards if e.backend != "local" else 0
    parts["engine.shards"] = PROCESS_BASE * (1 + workers)
    return {k: int(v) for k, v in parts.items()}


def check_memory(cfg, out=None) -> int:
    """Refuse ``cfg`` if its estimate exceeds the limit; warn when shards exceed CPUs.
    Returns the estimate in bytes."""
    parts = estimate(cfg)
    total = sum(parts.values())
    e = cfg.engine
    cpus = os.cpu_count() or 1
    if e.shards > cpus and e.backend != "ray":
        print(f"warning: engine.shards = {e.shards} is more than this machine's {cpus} CPUs; "
              f"shards beyond {cpus} add processes and memory, not speed", file=out or sys.stderr)
    limit = e.memory_limit_gb * GB if e.memory_limit_gb is not None else available_memory()
    if limit is None or total <= limit:
        return total
    key = max(parts, key=parts.get)
    value = _value_of(cfg, key)
    what = "engine.memory_limit_gb" if e.memory_limit_gb is not None else "available memory"
    biggest = ", ".join(f"{k} {v / GB:.2f} GB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
    shown_key = key.split(" ")[0]
    raise ConfigError(shown_key, value,
                      f"a value whose run fits in memory: estimated {total / GB:.1f} GB ({biggest}) "
                      f"exceeds {what} ({limit / GB:.1f} GB); lower it, or set "
                      f"engine.memory_limit_gb={max(1, int(total / GB) + 1)} to run anyway")


def _value_of(cfg, key: str):
    name = key.split(" ")[0]
    if name == "policy.n_draws":
        cell = key[key.index("(") + 1:-1]
        return next(c.policy.get("n_draws") for c in cfg.cells if c.name == cell)
    section, attr = name.split(".")
    return getattr(getattr(cfg, section), attr)
