"""Cancel points inside model code: where a long forward pass may stop when its run is cancelled.

The caller (a node) says how to check: `with cancel_points(ctx.check_cancelled): ...`; the model
code calls `cancel_point()` between blocks, tiles and pieces of big operations, and whatever the
check raises (the engine's `Cancelled`) propagates out of the forward pass. The check travels in a
context variable, so the U-Net and VAE need no extra argument and import nothing from the node
library or the engine; outside a `cancel_points` block, `cancel_point()` does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

CancelCheck = Callable[[], None]  # returns when the work may go on, raises to stop it

_check: ContextVar[CancelCheck | None] = ContextVar("latentgraph_cancel_check", default=None)


@contextmanager
def cancel_points(check: CancelCheck | None) -> Iterator[None]:
    """Within the block, every `cancel_point()` in this thread calls `check` (None: no checks)."""
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def cancel_point() -> None:
    """Give the current run a chance to stop here. Cheap (a context-variable read) when no check is set.
    Inside a torch.compile'd model it is left out (a context-variable read would break the compiled
    graph into pieces, one per block and shape): a compiled forward stops at the sampler's steps."""
    if torch.compiler.is_compiling():
        return
    check = _check.get()
    if check is not None:
        check()
