"""Named, keyed random streams derived from one root seed.

Every random draw in the simulator comes from a ``numpy.random.Generator`` built here. A stream is
identified by a name (``"world"``, ``"arrivals"``, ``"response"``, ``"policy"``, ...) and integer
keys such as (member block, serving window). Because member-driven streams are keyed by member
block rather than by process or shard, the same seed gives the same visits and outcomes however
members are split across workers, and every policy compared on the same seed sees the same
members and visits (common random numbers).
"""
from __future__ import annotations

import zlib

import numpy as np

STREAM_NAMES = ("world", "arrivals", "response", "policy", "ranker", "allocation", "bootstrap")


def stream_id(name: str) -> int:
    """Stable 32-bit id of a stream name (crc32: independent of Python's hash seed)."""
    return zlib.crc32(name.encode("utf-8"))


def generator(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A PCG64 generator for stream ``name`` keyed by ``keys`` under the root ``seed``."""
    entropy = [int(seed) & 0xFFFFFFFF, int(seed) >> 32, stream_id(name), *(int(k) for k in keys)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def stable_unit_hash(ids: np.ndarray, salt: str) -> np.ndarray:
    """Map integer ids to [0, 1) with a salted splitmix64 hash: stable across runs and machines.

    Used to allocate members to experiment cells by (member id, experiment name).
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64 by design
        x = ids.astype(np.uint64) + np.uint64(stream_id(salt)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
