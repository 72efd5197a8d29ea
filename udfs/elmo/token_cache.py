"""The token cache: each distinct token's context-free vector (char CNN -> highway -> projection), computed once.

The biLM's token layer depends on a token's characters alone, and it is most of the model's multiply-adds (58 %
of the original architecture's). A batch computes it once per *distinct* token, and a per-model LRU keeps recent
tokens' vectors for later batches, tasks and jobs of the same Python worker. The LRU is bounded in bytes: its
vectors live in one preallocated-as-needed float32 matrix, so a full cache never grows.

Exactness: a cached vector is the one the token layer computed for that token, in a batch of other tokens. Matrix
kernels may round a row differently in the last bit depending on the batch's size, so a token's vector agrees
with the uncached model's to float32 rounding (tests: 1e-6), not bitwise.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

AUTO = -1  # embed.token_cache_mb: sized for the machine
AUTO_SHARE = 1 / 64  # of the machine's memory, per model (one model per Python worker)
AUTO_MAX_MB = 256
ENTRY_OVERHEAD = 160  # bytes a cached token costs beside its vector: the dict entry and the key string


def cache_megabytes(setting: float | int | None) -> float:
    """The cache's size in MB for a setting: ``-1``/None = 1/64 of the machine's memory, at most 256 MB; 0 = off."""
    if setting is None or setting == AUTO:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
        return min(AUTO_MAX_MB, total * AUTO_SHARE / (1 << 20))
    if setting < 0:
        raise ValueError(f"token cache size must be >= 0 MB, or -1 for automatic, got {setting}")
    return float(setting)


class TokenCache:
    """Least-recently-used token -> vector map of at most ``max_bytes`` (vectors and keys together).

    ``vectors_for(tokens, compute)`` returns one row per distinct token, computing only the tokens it does not hold
    (``compute`` takes their list and returns their vectors); it counts token occurrences served from the cache
    or from an earlier occurrence in the same call as hits.
    """

    def __init__(self, dim: int, max_bytes: float):
        self.dim = int(dim)
        self.max_bytes = max(0, int(max_bytes))
        self.capacity = max(0, int(max_bytes // (4 * self.dim + ENTRY_OVERHEAD)))
        self._slots: OrderedDict[str, int] = OrderedDict()
        self.clear()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def nbytes(self) -> int:
        """Bytes held now: the vectors' matrix plus the keys' estimated cost."""
        return self._vectors.nbytes + ENTRY_OVERHEAD * len(self._slots)

    def stats(self) -> dict[str, float]:
        seen = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / seen if seen else 0.0,
            "entries": len(self._slots),
            "capacity": self.capacity,
            "megabytes": self.nbytes / (1 << 20),
        }

    def clear(self) -> None:
        """Forget every token and zero the counts (the byte budget stays)."""
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._slots.clear()
        self.hits = self.misses = 0

    def vectors_for(
        self, occurrences: Sequence[str], compute: Callable[[list[str]], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(vectors of the distinct tokens (U, dim), index of each occurrence's row in them (len(occurrences),))."""
        index_of: dict[str, int] = {}
        rows = np.empty(len(occurrences), np.int64)
        for k, token in enumerate(occurrences):
            i = index_of.get(token)
            if i is None:
                i = index_of[token] = len(index_of)
            rows[k] = i
        distinct = list(index_of)
        vectors = np.empty((len(distinct), self.dim), np.float32)
        missing = []
        for i, token in enumerate(distinct):
            slot = self._slots.get(token)
            if slot is None:
                missing.append(i)
            else:
                self._slots.move_to_end(token)
                vectors[i] = self._vectors[slot]
        if missing:
            computed = np.asarray(compute([distinct[i] for i in missing]), dtype=np.float32)
            vectors[missing] = computed
            self._store([distinct[i] for i in missing], computed)
        self.misses += len(missing)
        self.hits += len(occurrences) - len(missing)
        return vectors, rows

    def _store(self, tokens: list[str], vectors: np.ndarray) -> None:
        if not self.capacity:
            return
        if len(tokens) > self.capacity:  # keep the most recent ones only
            tokens, vectors = tokens[-self.capacity :], vectors[-self.capacity :]
        free = self.capacity - len(self._slots)
        if len(self._vectors) < min(self.capacity, len(self._slots) + len(tokens)):
            # grow by doubling (up to the capacity), so a small workload never allocates the whole budget
            size = min(self.capacity, max(2 * len(self._vectors), len(self._slots) + len(tokens), 1024))
            grown = np.zeros((size, self.dim), np.float32)
            grown[: len(self._vectors)] = self._vectors
            self._vectors = grown
        slots = []
        unused = iter(range(len(self._slots), len(self._vectors)))
        for k in range(len(tokens)):
            if k < free:
                slots.append(next(unused))
            else:  # evict the least recently used token and take its slot
                _, slot = self._slots.popitem(last=False)
                slots.append(slot)
        for token, slot in zip(tokens, slots, strict=True):
            self._slots[token] = slot
        self._vectors[slots] = vectors
