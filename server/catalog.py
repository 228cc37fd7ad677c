"""The node catalog as JSON bytes, built once and rebuilt only when it would change.

Most of the catalog never changes while the server runs; only inputs whose choices come from a
function (checkpoint files, input images) do. Each request calls each of those functions once
(a folder listing) and compares the answers with the last ones: equal, the cached bytes go out
as they are; different, only the affected entries are patched and the JSON is written again.
The bytes carry an ETag, so a client that has them gets a 304.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from typing import Any, Callable

from latentgraph.engine import NodeRegistry


class CatalogCache:
    def __init__(self, registry: NodeRegistry, services: Any = None) -> None:
        self.registry = registry
        self.services = services  # what choices functions list from (the server's folders)
        self._lock = threading.Lock()
        self._types: tuple[str, ...] = ()
        self._entries: list[dict[str, Any]] = []
        # (entry index, input index, choices function) for every input with dynamic choices
        self._dynamic: list[tuple[int, int, Callable[[Any], list[Any]]]] = []
        self._choices: tuple[Any, ...] | None = None
        self._body = b"[]"
        self._etag = ""

    def get(self) -> tuple[bytes, str]:
        """The catalog as JSON (a list of node types, by category then type) and its ETag."""
        with self._lock:
            types = tuple(info.type for info in self.registry)
            if types != self._types:
                self._build(types)
            answers: dict[int, list[Any]] = {}
            for _, _, function in self._dynamic:
                if id(function) not in answers:
                    answers[id(function)] = _call(function, self.services)
            choices = tuple(_freeze(answers[id(f)]) for _, _, f in self._dynamic)
            if choices != self._choices:
                entries = copy.copy(self._entries)
                for (entry_index, input_index, function), _ in zip(self._dynamic, choices):
                    entry = entries[entry_index] = {**entries[entry_index]}
                    inputs = entry["inputs"] = list(entry["inputs"])
                    inputs[input_index] = {**inputs[input_index], "choices": answers[id(function)]}
                self._body = json.dumps(entries, separators=(",", ":"), default=str).encode()
                self._etag = '"' + hashlib.blake2b(self._body, digest_size=12).hexdigest() + '"'
                self._choices = choices
            return self._body, self._etag

    def entry(self, type_name: str) -> dict[str, Any] | None:
        info = self.registry.get(type_name)
        return info.catalog_entry(self.services) if info is not None else None

    def _build(self, types: tuple[str, ...]) -> None:
        infos = sorted(self.registry, key=lambda i: (i.category, i.type))
        self._entries, self._dynamic = [], []
        for entry_index, info in enumerate(infos):
            entry = info.catalog_entry(self.services)
            for input_index, spec in enumerate(info.inputs.values()):
                if spec.choices_fn is not None:
                    self._dynamic.append((entry_index, input_index, spec.choices_fn))
            self._entries.append(entry)
        self._types = types
        self._choices = None


def _call(function: Callable[[Any], list[Any]], services: Any) -> list[Any]:
    try:
        return list(function(services))
    except Exception:  # a folder that vanished: no choices rather than no catalog
        return []


def _freeze(values: list[Any]) -> tuple[Any, ...]:
    return tuple(json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v for v in values)


__all__ = ["CatalogCache"]
