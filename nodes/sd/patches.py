"""Model patches: changes to a loaded model's weights that a run applies and the next one undoes.

A LoRA does not make a new model: it is a list of weight deltas, each scaled by a strength. Model
handles (`handles.DiffusionModel`, `handles.TextEncoder`) carry an ordered tuple of `WeightPatch`es
beside the shared module they were loaded with; whoever runs the module first makes its weights
match the handle's patches (`patched(module, patches)`), under the module's lock, and the weights
stay so until a run with other patches comes. So a sweep over seeds with one LoRA patches once,
and a base-model run after a LoRA run first puts the base weights back.

Every patched parameter is set to `base + sum(strength_i * delta_i)`, summed in float32 in patch
order and rounded once to the parameter's dtype; a patch of strength 0 is left out, so strength 0
gives the base weights bit for bit. The base values are never rebuilt by subtracting deltas
(floating-point addition does not undo exactly): they are read back, bit for bit, from where the
module was loaded from.

* `FileWeights`: the safetensors checkpoint the module was filled from, read again through its
  memory map and converted exactly as loading did. No copy of the weights is kept: an attention
  LoRA touches about a third of SD1.5's U-Net, and a backup of those weights would cost ~1.3x the
  U-Net's memory; reading them back costs a fraction of a second (`bench/sd.py`).
* `BackupWeights`: for modules that do not come from such a file (built in memory, read from a
  pickle), a copy of each parameter taken the first time it is patched.

Weights are changed in place (`copy_`), so the parameters keep their identity and storage (views
such as OpenCLIP's packed q/k/v stay views). `PatchState.generation` counts weight changes: code
that freezes weights into a compiled graph must recompile when it moves (a compiled module that
reads its parameters at run time sees every patch by itself).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

__all__ = [
    "BackupWeights",
    "Delta",
    "FileWeights",
    "PatchError",
    "PatchState",
    "WeightPatch",
    "patch_state",
    "patched",
    "set_base_weights",
]


class PatchError(RuntimeError):
    """Patches that cannot be applied, or base weights that cannot be restored."""


class Delta(Protocol):
    """One parameter's change at strength 1, shaped like the parameter (`shape`):
    `add_to(target, strength)` adds strength x the change to a float32 tensor in place (a LoRA
    without building the change: one addmm), `compute(device)` gives it as a float32 tensor."""

    shape: tuple[int, ...]

    def compute(self, device: torch.device) -> torch.Tensor: ...

    def add_to(self, target: torch.Tensor, strength: float) -> None: ...


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """Deltas for some parameters of one module, with a strength.

    target: which module of a handle it changes ("unet", or a text encoder's name: "clip_l"...).
    deltas: parameter name (as the module's state_dict names it) -> Delta.
    strength: the factor the deltas are added with.
    identity: what the deltas are (a file's path, size and modification time), for cache keys
        and for telling whether two patch lists are the same.
    name: how messages call it (the LoRA's file name).
    """

    target: str
    deltas: Mapping[str, Delta]
    strength: float
    identity: Hashable
    name: str = ""

    @property
    def key(self) -> tuple[Hashable, float]:
        return (self.identity, self.strength)


class BaseWeights(Protocol):
    """Where a module's unpatched parameter values can be read back from, bit for bit."""

    def remember(self, module: nn.Module, names: Sequence[str]) -> None:
        """Called before `names` are patched for the first time (while they hold base values)."""

    def read(self, module: nn.Module, names: Sequence[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """The base values of `names` (some of them patched now), one at a time, in any dtype and
        on any device: copying one into its parameter (`copy_`) must give the base value exactly."""


class BackupWeights:
    """Base values kept as copies, taken the first time each parameter is patched."""

    def __init__(self) -> None:
        self._copies: dict[str, torch.Tensor] = {}

    def remember(self, module: nn.Module, names: Sequence[str]) -> None:
        state = module.state_dict(keep_vars=True)
        for name in names:
            if name not in self._copies:
                self._copies[name] = state[name].detach().clone()

    def read(self, module: nn.Module, names: Sequence[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            yield name, self._copies[name]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._copies.values())


@dataclass
class FileWeights:
    """Base values read again from the safetensors file the module was loaded from.

    sources: parameter name -> (file key, take) as loading used them (`take` turns the file's tensor
    into the parameter: a third of a packed matrix, a transpose; None where it is as stored).
    The file must still be the one that was loaded (same size and modification time)."""

    path: Path
    size: int
    mtime_ns: int
    sources: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]]
    def remember(self, module: nn.Module, names: Sequence[str]) -> None:
        missing = [name for name in names if name not in self.sources]
        if missing:
            raise PatchError(f"{self.path.name} has no tensor for {missing[0]}, so it could not be restored after patching")

    def read(self, module: nn.Module, names: Sequence[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """The file's tensors as stored (taken apart as loading did): `copy_` into the parameter
        converts them exactly as loading's `.to(device, dtype)` did. The file's memory map is
        reopened every `MAP_BYTES` read, so the pages it brings in do not add up to a copy of the
        weights in the process's resident set."""
        from safetensors import safe_open

        try:
            stat = self.path.stat()
        except OSError as error:
            raise PatchError(f"the model file {self.path} is gone ({error}), so its weights cannot be restored "
                             "after a LoRA: load the checkpoint again") from error
        if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns):
            raise PatchError(f"{self.path.name} changed on disk since it was loaded, so its weights cannot be restored "
                             "after a LoRA: load the checkpoint again")
        position = 0
        while position < len(names):
            mapped = 0
            last: tuple[str, torch.Tensor] | None = None  # q, k and v come from one packed tensor: read it once
            with safe_open(str(self.path), framework="pt", device="cpu") as handle:
                while position < len(names) and mapped < self.MAP_BYTES:
                    name = names[position]
                    file_key, take = self.sources[name]
                    if last is None or last[0] != file_key:
                        last = (file_key, handle.get_tensor(file_key))
                        mapped += last[1].numel() * last[1].element_size()
                    position += 1
                    yield name, last[1] if take is None else take(last[1])

    MAP_BYTES = 64 << 20


@dataclass(eq=False)
class PatchState:
    """What is applied to one module now, and how to undo it."""

    base: BaseWeights
    lock: threading.RLock = field(default_factory=threading.RLock)
    applied: tuple[tuple[Hashable, float], ...] | None = ()  # None: unknown (a change failed midway)
    touched: frozenset[str] = frozenset()  # parameters that may differ from their base values now
    generation: int = 0  # bumped whenever the weights change

    def activate(self, module: nn.Module, patches: Sequence[WeightPatch]) -> None:
        """Make the module's weights its base weights plus `patches` (zero-strength ones left out).

        One parameter at a time: its base value is read back (if it is patched now), the deltas
        are added in float32, and it is written in place; nothing the size of the model is held."""
        active = [patch for patch in patches if patch.strength != 0 and patch.deltas]
        key = tuple(patch.key for patch in active)
        if key == self.applied:
            return
        params = module.state_dict(keep_vars=True)
        wanted: dict[str, list[tuple[float, Delta]]] = {}
        for patch in active:
            for name, delta in patch.deltas.items():
                if name not in params:
                    raise PatchError(f"{patch.name or 'a patch'} changes {name}, which the model does not have")
                if tuple(params[name].shape) != tuple(delta.shape):
                    raise PatchError(f"{patch.name or 'a patch'} changes {name} with shape {list(delta.shape)}, "
                                     f"but the model's is {list(params[name].shape)}")
                wanted.setdefault(name, []).append((patch.strength, delta))

        previously = self.touched
        self.base.remember(module, [name for name in wanted if name not in previously])
        self.generation += 1
        self.applied, self.touched = None, previously | frozenset(wanted)  # until every write is done

        def write(name: str, base: torch.Tensor) -> None:
            param = params[name]
            if name not in wanted:
                param.copy_(base)
                return
            if param.dtype == torch.float32:  # summed in the parameter itself: nothing allocated
                if base is not param:
                    param.copy_(base)
                total = param
            else:  # the base as loaded, summed in float32, rounded once
                total = base.to(param.dtype).to(device=param.device, dtype=torch.float32)
            for strength, delta in wanted[name]:
                delta.add_to(total, strength)
            if total is not param:
                param.copy_(total)

        with torch.no_grad():
            for name, base in self.base.read(module, sorted(previously)):
                write(name, base)
            for name in wanted:
                if name not in previously:
                    write(name, params[name])
        self.applied, self.touched = key, frozenset(wanted)


_states: "weakref.WeakKeyDictionary[nn.Module, PatchState]" = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def set_base_weights(module: nn.Module, base: BaseWeights) -> None:
    """Say where `module`'s unpatched weights can be read back from (loaders call it)."""
    with _states_lock:
        _states[module] = PatchState(base)


def patch_state(module: nn.Module) -> PatchState:
    """The module's patch state (backups for a module no loader registered)."""
    with _states_lock:
        state = _states.get(module)
        if state is None:
            state = _states[module] = PatchState(BackupWeights())
        return state


@contextmanager
def patched(module: nn.Module, patches: Sequence[WeightPatch]) -> Iterator[nn.Module]:
    """Hold the module with exactly `patches` applied (and no others) until the block ends.

    The weights stay patched afterwards, until a use with other patches; while the block runs, the
    module's lock keeps other threads from switching them."""
    state = patch_state(module)
    with state.lock:
        state.activate(module, patches)
        yield module
