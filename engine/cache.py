"""The output cache: node outputs kept under their signature, bounded by bytes, least recently used first out.

Sizes are measured without importing torch: tensors are recognised by `element_size()` and
`nelement()`, modules by `parameters()` and `buffers()`, arrays by `nbytes`, images by their size
and bands. A value of another kind can say its size with a `cache_nbytes()` method, or be taught
through `register_sizer`.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

_sizers: list[tuple[type, Callable[[Any], int]]] = []


def register_sizer(kind: type, sizer: Callable[[Any], int]) -> None:
    """Teach `sizeof` the size in bytes of values of `kind` (checked before the built-in rules)."""
    _sizers.insert(0, (kind, sizer))


_SCALARS = frozenset({int, float, bool, str, bytes, type(None)})


def _tensor_bytes(value: Any) -> int:
    return int(value.element_size()) * int(value.nelement())


def sizeof(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by a value: tensor storage, module parameters and buffers, arrays, images,
    containers recursively (shared objects counted once)."""
    if type(value) in _SCALARS:
        return sys.getsizeof(value)
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    for kind, sizer in _sizers:
        if isinstance(value, kind):
            return sizer(value)
    own = getattr(value, "cache_nbytes", None)  # a value that says what it costs the output cache
    if callable(own):
        return int(own())
    if isinstance(value, (int, float, str, bytes, bytearray)):
        return sys.getsizeof(value)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return _tensor_bytes(value)
    if hasattr(value, "parameters") and hasattr(value, "buffers"):
        total = 0
        for tensor in (*value.parameters(), *value.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += _tensor_bytes(tensor)
        return total
    if hasattr(value, "nbytes") and isinstance(getattr(value, "nbytes"), int):
        return int(value.nbytes)
    if hasattr(value, "getbands") and hasattr(value, "size"):  # PIL image
        width, height = value.size
        return width * height * len(value.getbands())
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k, seen) + sizeof(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return sys.getsizeof(value) + sizeof(vars(value), seen)
    if hasattr(value, "__dataclass_fields__"):  # slotted dataclass
        return sys.getsizeof(value) + sum(sizeof(getattr(value, f), seen) for f in value.__dataclass_fields__)
    return sys.getsizeof(value)


@dataclass(frozen=True)
class CacheEntry:
    """A node's outputs by output name, and the JSON-able results an output node reported."""

    outputs: dict[str, Any]
    results: dict[str, Any]
    nbytes: int


@dataclass(frozen=True)
class CacheStats:
    entries: int
    nbytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class OutputCache:
    """Node outputs by signature, holding at most `max_bytes` (an entry larger than that is not kept)."""

    def __init__(self, max_bytes: int = 4 << 30):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    def get(self, signature: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(signature)
            self._hits += 1
            return entry

    def put(self, signature: str, outputs: dict[str, Any], results: dict[str, Any]) -> CacheEntry:
        entry = CacheEntry(outputs, results, sizeof(outputs) + sizeof(results))
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._nbytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return entry
            self._entries[signature] = entry
            self._nbytes += entry.nbytes
            while self._nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
                self._evictions += 1
        return entry

    def __contains__(self, signature: object) -> bool:
        return signature in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._nbytes, self.max_bytes, self._hits, self._misses, self._evictions)
