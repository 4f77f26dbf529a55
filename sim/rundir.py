"""Who owns a run directory: a manifest of what this project wrote there, an advisory lock held
by the writing process, and names that are safe to use in paths.

* **Manifest** (``.sim-manifest.json``): the top-level entries a run wrote (``config.yaml``,
  ``logs``, ``metrics.json``, ..., Hydra's ``.hydra`` and job log). Only listed entries (and this
  project's temporary files next to them) are ever removed or replaced. A directory holding
  anything else is *foreign* and refused (:func:`check_run_dir`) unless the user sets
  ``engine.overwrite=true``; even then, only entries named like run outputs are replaced and
  every other file is left alone.
* **Lock** (``.lock``): ``fcntl.flock`` on a file in the directory, held while a run writes.
  The kernel releases it when the process ends, however it ends (SIGKILL included), so a
  crashed run never leaves a stale lock; a second writer is refused while the first is alive.
* **Names** used in paths (``experiment.name``, ``world.name``) refuse ``/``, ``\\``, ``..``,
  control characters and more than :data:`MAX_NAME_LENGTH` characters
  (:func:`check_path_name`), so no run writes outside the output root.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from sim.schema import ConfigError

MANIFEST = ".sim-manifest.json"
LOCK_FILE = ".lock"
#: Files this module writes itself (always this project's).
OWN_FILES = (MANIFEST, LOCK_FILE)
TMP_SUFFIX = ".tmp"
MAX_NAME_LENGTH = 100
_MARK = "sim-run-directory"


class RunDirError(ConfigError):
    """A run directory that must not be written (foreign files, another writer, not a directory).
    A :class:`ConfigError`: it is raised before anything is simulated or written."""


class RunDirBusy(RunDirError):
    """Another live process holds the run directory's lock."""


def check_path_name(key: str, value: object) -> str:
    """``value`` if it is safe as one path component, else a :class:`ConfigError` naming ``key``."""
    allowed = (f"a name of 1 to {MAX_NAME_LENGTH} characters without '/', '\\', control "
               "characters, and other than '.' or '..' (it names a directory)")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "..."
        raise ConfigError(key, shown, allowed if isinstance(value, str) and value.strip()
                          else "a non-empty string; " + allowed)
    if ("/" in value or "\\" in value or value in (".", "..")
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)):
        raise ConfigError(key, value, allowed)
    return value


# ---- manifest -----------------------------------------------------------------------------------
def read_manifest(run_dir: Path | str) -> set[str] | None:
    """Entries listed in ``run_dir``'s manifest; ``None`` if there is none (or it is not ours)."""
    try:
        data = json.loads((Path(run_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get(_MARK) != 1 or not isinstance(data.get("entries"), list):
        return None
    return {str(e) for e in data["entries"]}


def claim(run_dir: Path | str, names: Iterable[str]) -> None:
    """Add ``names`` (top-level entries this project is about to write) to the manifest. Written
    before the entries themselves, so a run killed at any moment has listed what it wrote."""
    run_dir = Path(run_dir)
    listed = (read_manifest(run_dir) or set()) | set(names)
    text = json.dumps({_MARK: 1, "entries": sorted(listed)}, indent=1) + "\n"
    tmp = run_dir / f"{MANIFEST}.{os.getpid()}-{os.urandom(3).hex()}{TMP_SUFFIX}"
    tmp.write_text(text)
    os.replace(tmp, run_dir / MANIFEST)


def _own_tmp(name: str, listed: set[str]) -> bool:
    return name.endswith(TMP_SUFFIX) and any(name.startswith(e + ".") for e in listed | set(OWN_FILES))


def foreign_entries(run_dir: Path | str, adopt: Iterable[str] = ()) -> list[str]:
    """Top-level entries of ``run_dir`` this project did not write (``adopt``: entries to count
    as ours, e.g. what Hydra has just written for this run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    listed = (read_manifest(run_dir) or set()) | set(adopt)
    return sorted(n for n in os.listdir(run_dir)
                  if n not in OWN_FILES and n not in listed and not _own_tmp(n, listed))


def check_run_dir(run_dir: Path | str, overwrite: bool = False, key: str = "hydra.run.dir",
                  adopt: Iterable[str] = ()) -> None:
    """Refuse a run directory that is a file, or holds files this project did not write
    (unless ``overwrite``). Writes nothing."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(key, str(run_dir), "a directory (this path is an existing file)")
    if overwrite:
        return
    foreign = foreign_entries(run_dir, adopt)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise RunDirError(key, str(run_dir),
                          f"a new directory or one written by this project; it holds {len(foreign)} "
                          f"entries this project did not write ({shown}). Choose another directory, "
                          "or set engine.overwrite=true to write into it anyway (entries named like "
                          "run outputs are then replaced, all others left alone)")


def remove_listed(run_dir: Path | str, names: Iterable[str]) -> None:
    """Remove those of ``names`` that the manifest lists, and this project's temporary files
    next to them. Nothing unlisted is touched."""
    run_dir = Path(run_dir)
    listed = read_manifest(run_dir) or set()
    for name in names:
        if name not in listed:
            continue
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if run_dir.is_dir():
        for n in os.listdir(run_dir):
            if _own_tmp(n, listed) and (run_dir / n).is_file():
                (run_dir / n).unlink(missing_ok=True)


# ---- lock ---------------------------------------------------------------------------------------
class RunLock:
    """Exclusive advisory lock on a run directory, held until :meth:`release` or process exit.

    ``with RunLock(out, key):`` -- raises :class:`RunDirError` naming ``key`` if another live
    process holds it. The lock file stays (it is listed as this project's); the lock does not."""

    def __init__(self, run_dir: Path | str, key: str = "hydra.run.dir"):
        import fcntl

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.run_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise RunDirBusy(key, str(self.run_dir),
                              f"a directory no other run is writing to: {holder} holds its lock "
                              f"({self.run_dir / LOCK_FILE}); wait for it to finish") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"process {os.getpid()}")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()     # closing the descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(run_dir: Path | str) -> str | None:
    """Who holds ``run_dir``'s lock (``"process <pid>"``), or ``None`` if no live process does.
    Probes without taking it for longer than the call."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return fh.read().strip() or "another process"
    return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running: it exists and is not a zombie (a killed process not
    yet reaped by its own parent is dead for us). Unknown states count as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
