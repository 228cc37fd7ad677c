"""What a run may leave in the history: long text is stored shortened and says so.

The executor already refuses any value over `--max-value-size` (4 MiB by default) in memory. What
is stored with a run and returned by the API is bounded lower: each string to `max_string`
characters (`--max-stored-value`, 64 KiB by default), each run's results, errors and every event
to `budget` characters of text in all, lists to `MAX_ITEMS` items, nesting to `MAX_DEPTH`. What was
cut is listed as `{"path", "length", "kept"}` notes, which the run keeps in `summary.truncated`
and the API returns as `truncated`: a shortened value is never passed off as the whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from latentgraph.engine.jsonsafe import scrub_text

MAX_ITEMS = 10_000
MAX_DEPTH = 32
TRUNCATED_MARK = "…[truncated]"


@dataclass
class StoredBounds:
    max_string: int = 64 << 10  # characters in one stored string
    budget: int = 1 << 20  # characters of text in one run's results (and its errors, and each event)

    def bound(self, value: Any, path: str, notes: list[dict[str, Any]]) -> Any:
        """`value` made JSON-safe and bounded; what was cut is appended to `notes`."""
        remaining = [self.budget]
        return _bound(value, path, notes, self.max_string, remaining, 0)


def _bound(value: Any, path: str, notes: list[dict[str, Any]], max_string: int, remaining: list[int], depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, (str, bytes, bytearray)):
        text = scrub_text(value) if isinstance(value, str) else f"<{len(value)} bytes>"  # storable as UTF-8
        keep = max(0, min(len(text), max_string, remaining[0]))
        remaining[0] -= keep
        if keep < len(text):
            notes.append({"path": path, "length": len(text), "kept": keep})
            return text[:keep] + TRUNCATED_MARK
        return text
    if depth >= MAX_DEPTH:
        notes.append({"path": path, "length": 0, "kept": 0, "reason": f"nested deeper than {MAX_DEPTH} levels"})
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                notes.append({"path": path, "length": len(value), "kept": MAX_ITEMS})
                break
            key = _bound(str(key), path, notes, 256, [256], depth + 1)
            out[key] = _bound(item, f"{path}.{key}" if path else key, notes, max_string, remaining, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            if index >= MAX_ITEMS:
                notes.append({"path": path, "length": len(value), "kept": MAX_ITEMS})
                break
            items.append(_bound(item, f"{path}[{index}]", notes, max_string, remaining, depth + 1))
        return items
    return _bound(repr(value), path, notes, max_string, remaining, depth)


__all__ = ["MAX_DEPTH", "MAX_ITEMS", "StoredBounds", "TRUNCATED_MARK"]
