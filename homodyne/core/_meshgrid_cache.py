"""The documented meshgrid cache: LRU, keyed by the arrays' contents (SPEC §3.2).

This is homodyne's one piece of mutable module state. Entries are immutable JAX arrays, so handing
the same entry to several callers is safe; a lock makes the bookkeeping thread-safe.
"""

import threading
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import as_float64
from .._validate import is_traced

MAX_ENTRIES = 64
MAX_GRID_ELEMENTS = 1 << 20  # larger grids (> 8 MB each in float64) are built but not kept


class _MeshgridCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, tuple[jax.Array, jax.Array]] = OrderedDict()
        self._lock = threading.Lock()
        self.reset_stats()

    def reset_stats(self) -> None:
        self.hits = self.misses = self.evictions = self.skipped_large = self.skipped_traced = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, t1, t2) -> tuple[jax.Array, jax.Array]:
        if is_traced(t1, t2):
            with self._lock:
                self.skipped_traced += 1
            return _meshgrid(t1, t2)
        a, b = np.asarray(t1), np.asarray(t2)
        if a.ndim != 1 or b.ndim != 1:
            raise ValueError(
                f"get_cached_meshgrid takes two 1-D time vectors; got shapes {a.shape}, {b.shape}."
            )
        if a.size * b.size > MAX_GRID_ELEMENTS:
            with self._lock:
                self.skipped_large += 1
            return _meshgrid(a, b)
        # The key holds the full contents, so two different grids can never share an entry.
        key = (a.dtype.str, a.shape, a.tobytes(), b.dtype.str, b.shape, b.tobytes())
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self.misses += 1
        grids = _meshgrid(a, b)
        with self._lock:
            self._entries[key] = grids
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
                self.evictions += 1
        return grids

    def stats(self) -> dict:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "skipped_large": self.skipped_large,
                "skipped_traced": self.skipped_traced,
                "hit_rate": self.hits / lookups if lookups else 0.0,
                "cache_size": len(self._entries),
            }


def _meshgrid(t1, t2) -> tuple[jax.Array, jax.Array]:
    # float64 like every other homodyne array (the key keeps the input's dtype)
    g1, g2 = jnp.meshgrid(as_float64(t1), as_float64(t2), indexing="ij")
    return g1, g2


CACHE = _MeshgridCache()
