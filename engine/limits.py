"""Bounds on what one run may produce in memory and how long it may take.

`ExecutionLimits` belongs to an executor: every value a node produces (its outputs and what it
reports) is measured for text — strings and bytes, inside lists, tuples and dicts too — and a
node whose value holds more than `max_value_bytes` fails with an error naming the node and the
output. Tensors, images and models are not text and are bounded by the node library's own limits
(image size, batch, steps). `max_seconds` bounds a run's wall time: the executor gives the run's
cancel token a deadline, honoured at every cancel point.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_VALUE_BYTES = 4 << 20


@dataclass
class ExecutionLimits:
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES  # text in one node output or report; 0: no limit
    max_seconds: float = 0.0  # wall time of one run; 0: no limit


def text_size(value: object, budget: int | None = None) -> int:
    """Characters of text (str) plus bytes (bytes, bytearray) held by a JSON-like value, walking
    lists, tuples, sets and dicts (keys too) without recursion. With `budget`, stops counting once
    the total passes it (the result is then some number above the budget)."""
    total = 0
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            continue
        if budget is not None and total > budget:
            return total
    return total


class ValueTooLarge(ValueError):
    """A node produced more text than the executor's `max_value_bytes` allows."""


__all__ = ["DEFAULT_MAX_VALUE_BYTES", "ExecutionLimits", "ValueTooLarge", "text_size"]
