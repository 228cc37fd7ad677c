"""Loaded models, kept between runs within a byte budget, least recently used out first.

The executor's output cache keeps node outputs by signature; this cache keeps loaded models by
what they were loaded from (file, size, modification time, placement), so two loader nodes that
name the same file share one copy, and a model survives output-cache evictions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from latentgraph.engine.cache import sizeof


class ModelCache:
    def __init__(self, max_bytes: int = 16 << 30) -> None:
        self.max_bytes = max_bytes
        self._models: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The model stored under `key`, loading it (and evicting older ones) if absent."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
            model = load()
            self.loads += 1
            nbytes = sizeof(model)
            self._models[key] = (model, nbytes)
            while len(self._models) > 1 and self.nbytes > self.max_bytes:
                self._models.popitem(last=False)
            return model

    @property
    def nbytes(self) -> int:
        return sum(nbytes for _, nbytes in self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[Hashable]:
        """The keys of the models held, least recently used first. Without the lock, which a load
        holds for seconds: a copy taken while another thread changes the cache is taken again."""
        while True:
            try:
                return list(self._models)
            except RuntimeError:  # mutated during the copy
                continue

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
