"""Textual-inversion embeddings: learned token vectors that a prompt names as ``embedding:name``.

An embedding is one or more vectors as wide as a text encoder's token embeddings; the prompt
encoder puts them where the name stands, in place of token embeddings (see ``prompt``). Files
come in the layouts the tools that train them write:

* A1111 ``.pt`` / ``.bin`` (a pickle): ``{"string_to_param": {"*": [n, dim]}, "name": ..., ...}``;
  read only when pickles are allowed, and then with ``torch.load(weights_only=True)``.
* A1111 ``.safetensors``: ``emb_params`` ``[n, dim]``; converters that flatten the pickle write
  ``string_to_param.*``.
* SDXL: ``clip_l`` ``[n, 768]`` and ``clip_g`` ``[n, 1280]``, one set of vectors per text encoder.
* diffusers: a single tensor named after its token (``{"<cat-toy>": [dim]}`` or ``[n, dim]``),
  safetensors or a ``.bin`` pickle.

Which text encoder takes which vectors (``Embedding.vectors_for``): a set named after an encoder
(SDXL's ``clip_l`` / ``clip_g``) goes to that encoder when the widths agree; otherwise an encoder
takes a set as wide as its token embeddings. Every encoder of the model must get vectors: an
SD1.x embedding (768) on SDXL gives CLIP-L vectors but none for bigG, and is refused.

Names: ``embedding:name`` names a file in the embeddings folder, optionally in a sub-folder
(``embedding:styles/ink``), with or without its extension: the name is tried as given, then with
``.safetensors``, ``.pt`` and ``.bin`` appended (``candidate_names``), as ComfyUI does. Finding the
file is the node's job (it knows the folders); this module reads it. Importing it does not import
torch (validation uses the names and messages).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMBEDDING_EXTENSIONS",
    "MAX_VECTORS",
    "Embedding",
    "EmbeddingError",
    "EmbeddingNotFound",
    "candidate_names",
    "display_name",
    "load_embedding",
    "parse_embedding",
]

#: Extensions tried, in this order, after the name as given.
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
#: An embedding's vectors go into one 75-token window, so it can have at most 75.
MAX_VECTORS = 75
# SDXL files name their vector sets after the text encoders.
ENCODER_KEYS = ("clip_l", "clip_g")


class EmbeddingError(ValueError):
    """An embedding that cannot be read, or does not fit the model; the message says why."""


class EmbeddingNotFound(EmbeddingError, LookupError):
    """A prompt names an embedding that does not exist."""


def candidate_names(name: str) -> list[str]:
    """The file names ``embedding:name`` may mean, in the order they are tried."""
    return [name] + [name + extension for extension in EMBEDDING_EXTENSIONS]


def display_name(file_name: str) -> str:
    """How a prompt names the file ``file_name`` (its known extension dropped)."""
    for extension in EMBEDDING_EXTENSIONS:
        if file_name.lower().endswith(extension):
            return file_name[: -len(extension)]
    return file_name


@dataclass(frozen=True, eq=False)
class Embedding:
    """A loaded embedding.

    name: as the prompt names it. source: the file's name, for messages.
    sets: its vectors, float32 ``[n, width]`` each: keyed by text encoder name (SDXL files:
        ``clip_l``, ``clip_g``) or by ``"*"`` for a file with one set. All sets have the same n.
    identity: what the file was (path, size, modification time), for cache keys.
    """

    name: str
    source: str
    sets: Mapping[str, torch.Tensor]
    identity: tuple[Any, ...] = ()

    @property
    def num_vectors(self) -> int:
        return int(next(iter(self.sets.values())).shape[0])

    def describe(self) -> str:
        """Its vectors in words: ``2 vectors 768 wide`` or ``1 vector: clip_l 768 wide, clip_g 1280 wide``."""
        count = f"{self.num_vectors} vector{'s' if self.num_vectors != 1 else ''}"
        if list(self.sets) == ["*"]:
            return f"{count} {self.sets['*'].shape[1]} wide"
        return count + ": " + ", ".join(f"{key} {t.shape[1]} wide" for key, t in self.sets.items())

    def vectors_for(self, encoders: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
        """The vectors each text encoder takes: ``encoders`` is ``(name, width)`` per encoder of
        the model; returns name -> ``[n, width]``. Raises EmbeddingError naming the embedding,
        its widths and the encoders' when an encoder gets none."""
        chosen: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for name, width in encoders:
            named = self.sets.get(name)
            if named is not None and named.shape[1] == width:
                chosen[name] = named
                continue
            fitting = [t for t in self.sets.values() if t.shape[1] == width]  # else by width
            if fitting:
                chosen[name] = fitting[0]
            else:
                missing.append(name)
        if missing:
            widths = ", ".join(f"{name} ({width} wide)" for name, width in encoders)
            if len(encoders) == 1:
                model = f"the model's text encoder is {widths}"
            else:
                model = (f"the model's text encoders are {widths}, and {' and '.join(missing)} "
                         f"{'gets' if len(missing) == 1 else 'get'} none (an embedding for this model has vectors "
                         "for each of them)")
            raise EmbeddingError(
                f"embedding {self.name!r} ({self.source}) has {self.describe()}, which does not fit this model: "
                f"{model}; it was trained for another model family")
        return chosen


def _vectors(value: Any, where: str) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise EmbeddingError(f"{where} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
        raise EmbeddingError(f"{where} holds {value.dtype} numbers, not floating-point vectors")
    if value.ndim == 1:
        value = value[None]
    if value.ndim != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise EmbeddingError(f"{where} is shaped {list(value.shape)}; expected [vectors, width]")
    if value.shape[0] > MAX_VECTORS:
        raise EmbeddingError(f"{where} has {value.shape[0]} vectors; at most {MAX_VECTORS} fit in a prompt's "
                             "75-token window")
    value = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(value).all()):
        raise EmbeddingError(f"{where} holds NaN or infinite values")
    return value.clone()


def parse_embedding(state: Mapping[str, Any], name: str, source: str,
                    identity: tuple[Any, ...] = ()) -> Embedding:
    """An Embedding from a file's contents (a safetensors file's tensors by key, or what a pickle
    held), in any of the layouts of the module doc. Raises EmbeddingError naming what was found."""
    import torch

    where = f"embedding {name!r} ({source})"
    if not isinstance(state, Mapping):
        raise EmbeddingError(f"{where} holds a {type(state).__name__}, not a textual-inversion embedding")
    sets: dict[str, torch.Tensor]
    if "string_to_param" in state and isinstance(state["string_to_param"], Mapping):  # A1111 pickle
        params = state["string_to_param"]
        if len(params) != 1:
            raise EmbeddingError(f"{where}: string_to_param holds {len(params)} entries; an A1111 embedding has one")
        key, value = next(iter(params.items()))
        sets = {"*": _vectors(value, f"{where} string_to_param[{key!r}]")}
    elif "emb_params" in state:  # A1111 safetensors
        sets = {"*": _vectors(state["emb_params"], f"{where} emb_params")}
    elif any(key in state for key in ENCODER_KEYS):  # SDXL: one set per text encoder
        sets = {key: _vectors(state[key], f"{where} {key}") for key in ENCODER_KEYS if key in state}
    elif flattened := [key for key in state if isinstance(key, str) and key.startswith("string_to_param.")]:
        if len(flattened) != 1:
            raise EmbeddingError(f"{where} holds {len(flattened)} string_to_param.* tensors; an embedding has one")
        sets = {"*": _vectors(state[flattened[0]], f"{where} {flattened[0]}")}
    else:
        tensors = [key for key, value in state.items() if isinstance(value, torch.Tensor)]
        if len(tensors) != 1:  # diffusers: the only tensor, named after its token
            from latentgraph.nodes.sd.layout import describe_foreign_keys

            what = describe_foreign_keys([str(key) for key in tensors])
            raise EmbeddingError(
                f"{where} is not a textual-inversion embedding: expected emb_params, string_to_param, clip_l/clip_g "
                f"or a single tensor, but {what}")
        sets = {"*": _vectors(state[tensors[0]], f"{where} {tensors[0]!r}")}
    counts = {key: int(t.shape[0]) for key, t in sets.items()}
    if len(set(counts.values())) > 1:
        raise EmbeddingError(f"{where} has different numbers of vectors per text encoder "
                             f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    return Embedding(name, source, sets, identity)


# A file with more tensors than this is not an embedding (they hold one to three): a checkpoint or
# LoRA named by mistake is refused after reading its header, not loaded.
_MAX_TENSORS = 16


def load_embedding(path: str | os.PathLike, name: str, allow_pickle: bool = False) -> Embedding:
    """Read the embedding file at ``path`` (``name``: how the prompt named it, for messages).

    ``.safetensors`` files are read directly; ``.pt`` / ``.bin`` / ``.ckpt`` / ``.pth`` pickles (and
    files that are pickles despite their name) are refused unless ``allow_pickle``, and then read
    with ``torch.load(weights_only=True)``, which accepts only tensors and plain containers."""
    import torch
    from safetensors import SafetensorError, safe_open

    from latentgraph.nodes.sd.checkpoint import PICKLE_SUFFIXES, _looks_like_torch_save, _refuse_pickle_unless
    from latentgraph.nodes.sd.layout import CheckpointError

    path = Path(path)
    stat = path.stat()
    identity = (str(path), stat.st_size, stat.st_mtime_ns)
    where = f"embedding {name!r} ({path.name})"
    pickled = path.suffix.lower() in PICKLE_SUFFIXES
    what = f"a pickle file ({path.suffix})"
    if not pickled:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                keys = list(handle.keys())
                if len(keys) > _MAX_TENSORS:
                    from latentgraph.nodes.sd.layout import describe_foreign_keys

                    raise EmbeddingError(f"{where} holds {len(keys)} tensors, so it is not a textual-inversion "
                                         f"embedding: {describe_foreign_keys(keys)}")
                state: Any = {key: handle.get_tensor(key) for key in keys}
        except (SafetensorError, OSError) as error:
            if not _looks_like_torch_save(path):
                raise EmbeddingError(f"{where} is not a readable safetensors file ({error}); a download that "
                                     "stopped early leaves a truncated file: download it again") from error
            pickled, what = True, "a PyTorch pickle file despite its name"
    if pickled:
        try:
            _refuse_pickle_unless(allow_pickle, path, what)
        except CheckpointError as error:
            raise EmbeddingError(f"embedding {name!r}: {error} (the server and the CLI: --allow-pickle)") from None
        try:
            with open(path, "rb") as handle:  # a handle: torch.load would read a path named .safetensors as one
                state = torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise EmbeddingError(f"{where} holds Python objects other than tensors, which weights-only loading "
                                 f"refuses ({error}); convert it to .safetensors with a tool you trust") from error
        except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
            raise EmbeddingError(f"{where} is not a readable PyTorch file ({error})") from error
    return parse_embedding(state, name, path.name, identity)
