"""What one run may ask of the machine: image size, batch, steps and memory against the run limits.

`limits` is any object with `max_pixels`, `max_batch`, `max_steps` and `memory_fraction` (the node
library's `RunLimits`); 0 or None switches a limit off. The `*_over` functions return a message when
a value is over its limit (for validation issues), the `require_*` functions raise `OverLimit` (a
ValueError, so a node fails with it) before the expensive work starts. Every message names the
command-line flag that sets the limit. Importing this module does not import torch (validation uses it).
"""

from __future__ import annotations

from typing import Any


class OverLimit(ValueError):
    """A run asks more than the configured limits allow."""


def pixels_over(width: int, height: int, limits: Any) -> str | None:
    """'2048x4096 is 8,388,608 pixels, over the limit of 4,194,304 (--max-pixels)', or None."""
    limit = getattr(limits, "max_pixels", None)
    if limit and width * height > limit:
        return f"{width}x{height} is {width * height:,} pixels, over the limit of {limit:,} (--max-pixels)"
    return None


def batch_over(batch: int, limits: Any) -> str | None:
    limit = getattr(limits, "max_batch", None)
    if limit and batch > limit:
        return f"a batch of {batch} is over the limit of {limit} (--max-batch)"
    return None


def steps_over(steps: int, limits: Any) -> str | None:
    limit = getattr(limits, "max_steps", None)
    if limit and steps > limit:
        return f"{steps} steps is over the limit of {limit} (--max-steps)"
    return None


def require_within(limits: Any, what: str, *, size: tuple[int, int] | None = None, batch: int | None = None,
                   steps: int | None = None) -> None:
    """Raise OverLimit naming `what` (e.g. "the latent") if its size (width, height in image
    pixels), batch or steps is over a limit."""
    problems = [
        pixels_over(*size, limits) if size is not None else None,
        batch_over(batch, limits) if batch is not None else None,
        steps_over(steps, limits) if steps is not None else None,
    ]
    found = [p for p in problems if p]
    if found:
        raise OverLimit(f"{what}: " + "; ".join(found))


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def require_memory(estimate: int, device: Any, limits: Any, what: str) -> None:
    """Raise OverLimit if `estimate` bytes are more than memory_fraction of what `device` (a
    torch.device) has free; nothing is checked where the free memory cannot be told or the fraction is 0."""
    from latentgraph.nodes.sd.memory import free_memory

    fraction = getattr(limits, "memory_fraction", None)
    if not fraction:
        return
    free = free_memory(device)
    if free is None or estimate <= free * fraction:
        return
    raise OverLimit(
        f"{what} needs about {_gib(estimate)} of memory, but {_gib(free)} is free on {device} and "
        f"a run may use {fraction:.0%} of it ({_gib(int(free * fraction))}, --memory-fraction); use a smaller "
        "size or batch, or free memory")
