"""torch.compile'd model forwards (`--compile`): made once per model, dtype and weights, reused.

Inside a `compiled_models(True)` block, `forward_of(module)` gives a compiled forward of `module`
(inductor; on the CPU with freezing, which folds the weights into the compiled code, prepacked for
oneDNN: measured on the SD1.5 U-Net, 1.41x over eager at 256x256 and 1.11x at 512x512 in fp32, 1.26x
and 1.14x in bf16, where compiling without freezing was slower than eager), else the module itself.
The U-Net (`ModelHandle.net`) and the VAE's decoder (`AutoencoderKL.decode`; tiles are one shape)
use it.
Compiled forwards are cached by module: one per module, remade when its weights change
(`PatchState.generation`, bumped by every LoRA switch, since frozen weights would not follow) or
when it moves to another device or dtype. Shapes are static: a new image size compiles once more
(dynamo keeps up to its recompile limit, 8, per forward), never per step (the model code has no
graph breaks; cancel points are left out of compiled code, see interrupt.py). A compiled forward
runs at the thread count it was compiled with (dynamo guards on it, so another count would compile
again; `running_models` keeps the nodes' thread fitting out of compiled blocks). When compiling
fails (no C++ compiler, an operator inductor cannot lower), the forward falls back to eager, from
then on for that module, with a warning.
Each compile (or fallback) is noted in the list `compiled_models` yields, so the node that paid for
it reports it in its results. Inductor keeps the code it generated in its on-disk cache
(`TORCHINDUCTOR_CACHE_DIR`, by default under the system's temporary folder), so another process
compiling the same model and shape does less (measured on SD1.5 in bf16: the U-Net 73 s the first
time, 46 s in a second process; the decoder 32 s and 18 s: dynamo's tracing and freezing run again).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from latentgraph.nodes.sd.patches import patch_state

log = logging.getLogger(__name__)

_enabled: ContextVar[bool] = ContextVar("latentgraph_compile", default=False)
_notes: ContextVar["list[dict[str, Any]] | None"] = ContextVar("latentgraph_compile_notes", default=None)


@contextmanager
def compiled_models(enabled: bool) -> Iterator[list[dict[str, Any]]]:
    """Within the block, `forward_of` gives compiled forwards (when `enabled`). Yields the list of
    compiles made in the block: `{"model", "seconds"}`, `{"model", "failed"}` for a fallback to
    eager, `{"model", "eager"}` for a size left uncompiled for want of memory."""
    notes: list[dict[str, Any]] = []
    token, notes_token = _enabled.set(enabled), _notes.set(notes)
    try:
        yield notes
    finally:
        _enabled.reset(token)
        _notes.reset(notes_token)


@dataclass
class _Entry:
    key: tuple[Any, ...]
    forward: Callable[..., Any]
    threads: int  # torch's CPU thread count when it was made: a change would make dynamo recompile
    failed: bool = False
    shapes: set[tuple[Any, ...]] = field(default_factory=set)  # the input shapes it compiled for


# Freezing keeps its own prepacked copy of the weights in each compiled graph (one per image size),
# and compiling holds more for a while: measured on SD1.5's U-Net and VAE, the process grew by about
# 2.3x the models' weights for each size compiled in fp32 (7.9 GB) and 1.9x in bf16 (3.2 GB).
FROZEN_COPIES = 2.5


def _shape_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else None
                 for v in (*args, *kwargs.values()))


def _note(**fields: Any) -> None:
    """Add to the notes of the `compiled_models` block this runs in (if any)."""
    notes = _notes.get()
    if notes is not None:
        notes.append(fields)


def _free_cpu_memory() -> int | None:
    from latentgraph.nodes.sd.memory import free_memory

    return free_memory("cpu")


def _room_to_freeze(module: nn.Module) -> str | None:
    """Why another frozen graph of `module` would not fit in the memory free now (None: it fits)."""
    free = _free_cpu_memory()
    need = FROZEN_COPIES * sum(p.numel() * p.element_size() for p in module.parameters())
    if free is None or need <= free:
        return None
    return f"compiling for this size would need about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is free"


_entries: "weakref.WeakKeyDictionary[nn.Module, _Entry]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _key(module: nn.Module) -> tuple[Any, ...]:
    parameter = next(module.parameters())
    freeze = parameter.device.type == "cpu"
    return (patch_state(module).generation if freeze else None, parameter.device, parameter.dtype, freeze)


def forward_of(module: nn.Module) -> Callable[..., Any]:
    """The module's compiled forward inside `compiled_models(True)`, else the module itself."""
    if not _enabled.get():
        return module
    key = _key(module)
    with _lock:
        entry = _entries.get(module)
        if entry is not None and entry.failed:
            return module
        if entry is None or entry.key != key:
            if entry is not None:  # its weights changed: dynamo would reuse the frozen code by its guards
                torch._dynamo.reset()
            freeze = key[3]
            # Static shapes: each image size compiles once (dynamo's automatic dynamic shapes would
            # recompile the second size symbolically, which inductor's freezing fails to lower).
            compiled = torch.compile(module, dynamic=False)
            entry = _entries[module] = _Entry(key, _guarded(module, compiled, freeze), torch.get_num_threads())
    return entry.forward


def _guarded(module: nn.Module, compiled: Callable[..., Any], freeze: bool) -> Callable[..., Any]:
    """The compiled forward: run at the thread count it was made with; a call that compiles (the
    first, a new size) is timed and noted; one whose compile fails runs eagerly, now and from then on.
    `freeze`: compile with inductor's freezing, which is read from its global config when the call
    compiles (`torch.compile(options={"freezing": True})` does not reach it: measured, the weights
    stayed graph inputs and no convolution was prepacked; eager was faster)."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config

    name = type(module).__name__
    freezing = (lambda: inductor_config.patch(freezing=True)) if freeze else nullcontext

    def forward(*args: Any, **kwargs: Any) -> Any:
        entry = _entries.get(module)
        if entry is None or entry.failed:
            return module(*args, **kwargs)
        shapes = _shape_key(args, kwargs)
        if shapes not in entry.shapes:  # this call compiles: a first call, or a new size
            if freeze and (short := _room_to_freeze(module)):  # frozen weights are copies: room for them?
                log.warning("%s runs eagerly at this size: %s", name, short)
                _note(model=name, eager=short)
                return module(*args, **kwargs)
            entry.shapes.add(shapes)
        if torch.get_num_threads() != entry.threads:
            torch.set_num_threads(entry.threads)
        graphs = counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        try:
            with freezing():
                out = compiled(*args, **kwargs)
        except Exception as exc:  # no compiler, an operator it cannot lower ... or bad input: eager decides
            out = module(*args, **kwargs)  # raises where the input is at fault, as without --compile
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            log.warning("compiling %s failed (%s); it runs eagerly", name, reason)
            entry.failed = True
            _note(model=name, failed=reason)
            return out
        if counters["stats"]["unique_graphs"] != graphs:  # this call compiled (a first call, a new size)
            seconds = time.perf_counter() - started
            log.info("compiled %s in %.1f s", name, seconds)
            _note(model=name, seconds=round(seconds, 2))
        return out

    return forward


__all__ = ["compiled_models", "forward_of"]
