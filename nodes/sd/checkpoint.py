"""Load and save single-file Stable Diffusion checkpoints in the LDM layout.

A checkpoint is one `.safetensors` file with the U-Net under `model.diffusion_model.`, the VAE
under `first_stage_model.` and the text encoders where the family spec says. Loading reads
the header, detects the family and infers every config from tensor shapes, checks that the file
and the modules agree key for key (before reading any tensor data), then builds the modules on
the meta device (no memory) and fills them one tensor at a time from the memory-mapped file, so
the weights exist once in memory, not twice. Half-precision files are upcast to float32 on CPU,
where half-precision compute is slow and poorly supported.

Pickle checkpoints (.ckpt, .pt, .pth, .bin) can run arbitrary code when unpickled; they are
refused unless the caller allows them, and then read only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextModel

from latentgraph.nodes.sd import open_clip
from latentgraph.nodes.sd import text_encoder as clip
from latentgraph.nodes.sd.families import SD1, ModelFamily, detect_family, ensure_supported
from latentgraph.nodes.sd.layout import (
    SCALING_FACTOR_METADATA_KEY,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointError,
    UnsupportedCheckpoint,
    describe_foreign_keys,
    infer_vae_config,
    scaling_factor_from_metadata,
)
from latentgraph.nodes.sd.open_clip import Source
from latentgraph.nodes.sd.spec import FamilySpec, TextEncoderSpec
from latentgraph.nodes.sd.unet import UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL, fit_preview_colours

__all__ = [
    "CheckpointError",
    "InsufficientMemory",
    "UnsupportedCheckpoint",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_vae",
    "save_checkpoint",
    "resolve_dtype",
]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

# Keys inside the model prefixes that are not weights of our modules and are skipped on purpose:
# the VAE's training loss (LPIPS, discriminator) that some full checkpoints carry, and CLIP's
# position_ids (see IGNORED_SUFFIXES), which is rebuilt (see text_encoder.finish_text_encoder).
IGNORED_PREFIXES = (
    VAE_PREFIX + "loss.",
    "loss.",
)
IGNORED_SUFFIXES = ("embeddings.position_ids",)

# VAE tensors in a standalone VAE file (no `first_stage_model.` prefix).
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


class InsufficientMemory(CheckpointError):
    """The models of a file would not fit in the memory free on the device (raised before loading)."""


@dataclass
class LoadedCheckpoint:
    """The models of a checkpoint, in eval mode with gradients off, and what they are.

    text_encoders: by the names the family spec gives them, in the spec's order."""

    unet: UNetModel
    vae: AutoencoderKL
    text_encoders: dict[str, CLIPTextModel]
    family: ModelFamily
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def text_encoder(self) -> CLIPTextModel:
        """The first text encoder (the only one of SD1.x)."""
        return next(iter(self.text_encoders.values()))


def resolve_dtype(device: torch.device | str, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype models get on `device`: on the CPU float32, or bfloat16 when asked (float16 is
    upcast there: its matmuls are hundreds of times slower); with dtype None, float16 on GPUs and
    float32 elsewhere."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.float32 if dtype in (None, torch.float16) else dtype
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    return dtype


@dataclass
class _TensorFile:
    """A model file's tensors by key, read one at a time; shapes and metadata without reading data."""

    shapes: dict[str, tuple[int, ...]]
    read: Callable[[str], torch.Tensor]
    metadata: dict[str, str]
    description: str  # how messages name the file
    safetensors: Path | None = None  # the file, where it is a safetensors file (weights can be read again)


@contextmanager
def open_tensor_file(path: str | os.PathLike, allow_pickle: bool = False) -> Iterator[_TensorFile]:
    """Open a .safetensors file memory-mapped (or, if allowed, a pickle checkpoint).

    Raises FileNotFoundError for a missing path and CheckpointError for anything unreadable, with
    a message that says what the file is and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        hint = " (it looks like a diffusers model folder)" if (path / "model_index.json").exists() else ""
        raise CheckpointError(f"{path} is a folder{hint}; Latentgraph loads single-file .safetensors checkpoints")

    if path.suffix.lower() in PICKLE_SUFFIXES:
        _refuse_pickle_unless(allow_pickle, path, f"a pickle checkpoint ({path.suffix})")
        yield _open_pickle(path)
        return

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as error:
        if not _looks_like_torch_save(path):
            raise CheckpointError(
                f"{path.name} is not a readable safetensors file ({error}). A download that stopped early "
                "leaves a truncated file; download it again."
            ) from error
        handle = None
    if handle is None:
        _refuse_pickle_unless(allow_pickle, path, "a PyTorch pickle file despite its name")
        yield _open_pickle(path)
        return
    with handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        yield _TensorFile(shapes, handle.get_tensor, dict(handle.metadata() or {}), path.name, path)


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (torch >= 1.6) or, before that, a bare pickle stream."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:3] == b"\x80\x02\x8a"


def _refuse_pickle_unless(allowed: bool, path: Path, what: str) -> None:
    if not allowed:
        raise CheckpointError(
            f"{path.name} is {what}. Pickle files can run arbitrary code when loaded, so they are refused "
            "by default: convert it to .safetensors, or pass allow_pickle=True to read it with "
            "torch.load(weights_only=True), which accepts only tensors and plain containers."
        )


def _open_pickle(path: Path) -> _TensorFile:
    try:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            # mmap keeps the tensors in the file until read; it needs the zip format (torch >= 1.6).
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        else:  # torch.load reads a path named .safetensors as safetensors: give it the open file
            with open(path, "rb") as handle:
                loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path.name} holds Python objects other than tensors, which weights_only loading refuses "
            f"({error}); convert it to .safetensors with a tool you trust"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint ({error})") from error
    state = loaded if isinstance(loaded, dict) else None
    # Lightning checkpoints keep the weights under state_dict; BasicSR / Real-ESRGAN .pth files under
    # params_ema (the averaged weights, preferred) or params.
    for wrapper in ("state_dict", "params_ema", "params"):
        if state is not None and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name} does not hold a state dict (found {type(loaded).__name__})")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    return _TensorFile({key: tuple(t.shape) for key, t in tensors.items()}, tensors.__getitem__, {}, path.name)


@dataclass
class _Part:
    """One model of the file: the module (on meta) and where each of its tensors is in the file.

    sources: the module's state_dict key -> open_clip.Source (file key, and how to take the
    tensor from the file's: a third of a packed matrix, a transpose; None where it is as stored).
    ignored: file keys under file_prefix that belong to the part but are not used.
    """

    name: str
    module: nn.Module
    file_prefix: str  # every key of this part in the file starts with it
    sources: dict[str, Source]
    ignored: frozenset[str] = frozenset()


def _plain_part(name: str, module: nn.Module, prefix: str, to_file_key: Callable[[str], str] | None = None) -> _Part:
    """A part stored key for key as the module names its tensors (after `to_file_key`, default: the prefix)."""
    to_file_key = to_file_key or (lambda key: prefix + key)
    return _Part(name, module, prefix, {key: Source(to_file_key(key)) for key in module.state_dict()})


def _key_problems(part: _Part, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and wrongly shaped tensors of one part, as sentences."""
    state = part.module.state_dict()
    expected = {source.file_key: tuple(source.file_shape or state[key].shape) for key, source in part.sources.items()}
    present = {
        key for key in shapes if key.startswith(part.file_prefix) and not key.startswith(IGNORED_PREFIXES)
        and not key.endswith(IGNORED_SUFFIXES) and key not in part.ignored
    }
    problems = []
    missing = sorted(expected.keys() - present)
    unexpected = sorted(present - expected.keys())
    wrong_shape = sorted(
        f"{key} {list(shapes[key])} (expected {list(expected[key])})"
        for key in expected.keys() & present
        if tuple(shapes[key]) != expected[key]
    )
    for label, names in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", wrong_shape)):
        if names:
            shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
            problems.append(f"{part.name}: {len(names)} tensor{'s' if len(names) != 1 else ''} {label}: {shown}")
    return problems


def _place(module: nn.Module, key: str, tensor: torch.Tensor) -> None:
    """Put `tensor` in place of the parameter or buffer `key` (replacing its meta placeholder)."""
    owner_name, _, leaf = key.rpartition(".")
    owner = module.get_submodule(owner_name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


def _fill(part: _Part, source: _TensorFile, device: torch.device, dtype: torch.dtype) -> None:
    """Read the part's tensors one by one into its module: the file is read once, never held twice.
    A file tensor several model tensors come from (q, k and v packed in one matrix) is read once
    and kept only until its last piece is placed; the pieces are views of it where no conversion
    is needed, so they share its memory."""
    uses = Counter(entry.file_key for entry in part.sources.values())
    pending: dict[str, torch.Tensor] = {}
    for key, entry in part.sources.items():
        tensor = pending.get(entry.file_key)
        if tensor is None:
            tensor = source.read(entry.file_key)
        if uses[entry.file_key] > 1:
            uses[entry.file_key] -= 1
            pending[entry.file_key] = tensor
        else:
            pending.pop(entry.file_key, None)
        if entry.take is not None:
            tensor = entry.take(tensor)
        if tensor.is_floating_point():
            tensor = tensor.to(device=device, dtype=dtype)
        else:
            tensor = tensor.to(device=device)
        _place(part.module, key, tensor)


def _register_file_weights(part: _Part, path: Path) -> None:
    """Let patches (`nodes.sd.patches`) restore the part's weights from the file, as `_fill` read them."""
    from latentgraph.nodes.sd.patches import FileWeights, set_base_weights

    stat = path.stat()
    sources = {key: (entry.file_key, entry.take) for key, entry in part.sources.items()}
    set_base_weights(part.module, FileWeights(path, stat.st_size, stat.st_mtime_ns, sources))


def _part_bytes(part: _Part, dtype: torch.dtype) -> int:
    return sum(t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
               for t in part.module.state_dict().values())


def _size(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 30 else f"{count / (1 << 20):.0f} MiB"


def _require_memory(parts: list[_Part], dtypes: list[torch.dtype], device: torch.device, description: str,
                    fraction: float | None) -> None:
    """Refuse, before reading any weights, a model that does not fit in what `device` has free."""
    if not fraction:
        return
    from latentgraph.nodes.sd.memory import free_memory

    free = free_memory(device)
    if free is None:
        return
    needed = sum(_part_bytes(part, dtype) for part, dtype in zip(parts, dtypes))
    if needed > free * fraction:
        hint = " with --precision bf16 the U-Net takes half as much;" if device.type == "cpu" and dtypes[0] == torch.float32 else ""
        raise InsufficientMemory(
            f"{description} needs {_size(needed)} of {'memory' if device.type == 'cpu' else str(device) + ' memory'} "
            f"in {', '.join(sorted({str(d).removeprefix('torch.') for d in dtypes}))}, but only {_size(free)} is free"
            f" ({fraction:.0%} of it may be used);{hint} close other programs or unload models first")


def _check_and_fill(parts: list[_Part], source: _TensorFile, device: torch.device, dtypes: list[torch.dtype],
                    memory_fraction: float | None = None) -> None:
    problems = [problem for part in parts for problem in _key_problems(part, source.shapes)]
    if problems:
        raise CheckpointError(
            f"{source.description} does not match the model its shapes describe:\n  " + "\n  ".join(problems)
        )
    _require_memory(parts, dtypes, device, source.description, memory_fraction)
    for part, dtype in zip(parts, dtypes):
        _fill(part, source, device, dtype)
        part.module.eval().requires_grad_(False)


def _text_encoder_part(encoder_spec: TextEncoderSpec, model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> _Part:
    name = f"text encoder {encoder_spec.name}"
    prefix = encoder_spec.prefix
    if encoder_spec.layout == "open_clip":
        unused = {prefix + key for key in open_clip.UNUSED}
        if not encoder_spec.pooled:  # SD2.x files carry a projection nothing uses
            unused.add(prefix + "text_projection")
        unused |= {key for key in shapes if key.startswith(prefix) and key.endswith(".attn_mask")}
        return _Part(name, model, prefix, open_clip.key_map(model, prefix), frozenset(unused))
    return _plain_part(name, model, prefix, lambda key: clip.file_key(model, key, prefix))


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
    text_dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
    memory_fraction: float | None = 0.9,
) -> LoadedCheckpoint:
    """Load a single-file LDM checkpoint's U-Net, VAE and text encoders, of any supported family.

    device / dtype: where the weights go and the U-Net's dtype; see `resolve_dtype` (on the CPU
        float16 becomes float32; bfloat16 is kept). text_dtype defaults to dtype; vae_dtype to
        float32 (SD VAEs can overflow in float16).
    prediction_type: "epsilon" or "v_prediction"; None or "auto" decides from the file (see
        `families.detect_family`).
    allow_pickle: read .ckpt/.pt files with torch.load(weights_only=True) instead of refusing them.
    memory_fraction: refuse, before reading any weights, a file whose models need more than this
        share of the memory free on `device` (None: do not check).
    Raises CheckpointError (not a checkpoint, unreadable, keys that do not match, too large) or its
    subclass UnsupportedCheckpoint (a family this version does not load).
    """
    path = Path(path)
    device = torch.device(device)
    model_dtype = resolve_dtype(device, dtype)
    text_dtype = resolve_dtype(device, text_dtype if text_dtype is not None else dtype)
    vae_dtype = resolve_dtype(device, vae_dtype if vae_dtype is not None else (dtype if dtype is not None else torch.float32))

    with open_tensor_file(path, allow_pickle) as source:
        family = detect_family(source.shapes, source.metadata, prediction_type, source=path.name, read=source.read)
        ensure_supported(family, source=path.name)

        with torch.device("meta"):
            unet = UNetModel(family.unet)
            vae = AutoencoderKL(family.vae)
            text_encoders = {spec.name: clip.build_text_encoder(config)
                             for spec, config in zip(family.spec.text_encoders, family.text_encoders)}
        parts = [_plain_part("U-Net", unet, UNET_PREFIX), _plain_part("VAE", vae, VAE_PREFIX)]
        parts += [_text_encoder_part(spec, text_encoders[spec.name], source.shapes) for spec in family.spec.text_encoders]
        dtypes = [model_dtype, vae_dtype] + [text_dtype] * len(text_encoders)
        _check_and_fill(parts, source, device, dtypes, memory_fraction)
        for model in text_encoders.values():
            clip.finish_text_encoder(model, device)
        metadata = dict(source.metadata)
        if source.safetensors is not None:  # LoRAs patch these; their base weights are read back from the file
            for part in parts:
                if part.module is not vae:
                    _register_file_weights(part, source.safetensors)

    if family.own_latent_space:  # the family's preview colours are another VAE's: fit this one's
        factors, bias = fit_preview_colours(vae)
        latent = replace(family.spec.latent, rgb_factors=factors, rgb_bias=bias)
        family = replace(family, spec=replace(family.spec, latent=latent))

    return LoadedCheckpoint(unet, vae, text_encoders, family, path, metadata)


def load_vae(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    scaling_factor: float | None = None,
    allow_pickle: bool = False,
    default_scaling_factor: float | None = None,
) -> AutoencoderKL:
    """Load a standalone VAE file (keys `encoder.*`, `decoder.*`, ...; e.g. models/vae/*.safetensors).

    A full checkpoint works too: its `first_stage_model.*` VAE is taken. The architecture of SD1.x,
    SD2.x and SDXL VAEs is the same, so the scaling factor cannot come from the weights: it is
    `scaling_factor` if given, else the file's `latentgraph.vae_scaling_factor` metadata, else
    `default_scaling_factor`, else SD1.x's (pass the SDXL spec's `latent.scaling_factor` for an
    SDXL VAE). dtype None means
    float32 everywhere.
    """
    path = Path(path)
    device = torch.device(device)
    vae_dtype = resolve_dtype(device, dtype if dtype is not None else torch.float32)

    with open_tensor_file(path, allow_pickle) as source:
        if "encoder.conv_in.weight" in source.shapes:
            prefix = ""
        elif VAE_PREFIX + "encoder.conv_in.weight" in source.shapes:
            prefix = VAE_PREFIX
        else:
            raise CheckpointError(f"{path.name} is not a VAE: {describe_foreign_keys(source.shapes)}")
        if scaling_factor is None:
            scaling_factor = (scaling_factor_from_metadata(source.metadata, path.name) or default_scaling_factor
                              or SD1.latent.scaling_factor)
        config = replace(infer_vae_config(source.shapes, prefix), scaling_factor=scaling_factor)

        with torch.device("meta"):
            vae = AutoencoderKL(config)
        parts = [_plain_part("VAE", vae, prefix)]
        if not prefix:
            # A standalone file has no common prefix: compare only its VAE-looking keys, so extras
            # such as EMA bookkeeping are ignored as they are in full checkpoints.
            source = _TensorFile(
                {key: shape for key, shape in source.shapes.items() if key.startswith(VAE_PARTS)},
                source.read,
                source.metadata,
                source.description,
            )
        _check_and_fill(parts, source, device, [vae_dtype])
    return vae


def save_checkpoint(
    path: str | os.PathLike,
    unet: UNetModel,
    vae: AutoencoderKL,
    text_encoder: nn.Module | Mapping[str, nn.Module],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
    family: FamilySpec = SD1,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write the models as one LDM-layout .safetensors checkpoint of `family` that `load_checkpoint` reads.

    text_encoder: the family's text encoders by their spec names (a single module for a
        one-encoder family), each written where and how (transformers' or open_clip's layout) the
        family stores it.
    metadata: extra string -> string header entries, e.g. {"latentgraph.vae_scaling_factor": "0.2"}.
    dtype: convert floating tensors (e.g. torch.float16 to halve the file); None keeps them as they are.
    extra_tensors: top-level tensors to store as they are (such as the `v_pred` marker).
    The file is written next to its destination and renamed into place, so an interrupted save
    never leaves a truncated checkpoint under the final name.
    """
    path = Path(path)
    entries = metadata or {}
    bad = [key for key, value in entries.items() if not isinstance(key, str) or not isinstance(value, str)]
    if bad:
        raise TypeError(f"safetensors metadata must map strings to strings; not so for {bad}")
    if SCALING_FACTOR_METADATA_KEY in entries:
        scaling_factor_from_metadata(entries, "metadata")  # fail now, not at load time
    encoders = dict(text_encoder) if isinstance(text_encoder, Mapping) else {family.text_encoders[0].name: text_encoder}
    names = [spec.name for spec in family.text_encoders]
    if sorted(encoders) != sorted(names):
        raise ValueError(f"a {family.label} checkpoint holds text encoders {names}, got {sorted(encoders)}")

    def prepared(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.contiguous()

    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in unet.state_dict().items():
        tensors[UNET_PREFIX + key] = prepared(tensor)
    for key, tensor in vae.state_dict().items():
        tensors[VAE_PREFIX + key] = prepared(tensor)
    for spec in family.text_encoders:
        model = encoders[spec.name]
        if spec.layout == "open_clip":
            for key, tensor in open_clip.to_open_clip(model).items():
                tensors[spec.prefix + key] = prepared(tensor)
        else:
            for key, tensor in model.state_dict().items():
                tensors[clip.file_key(model, key, spec.prefix)] = prepared(tensor)
    for key, tensor in (extra_tensors or {}).items():
        tensors[key] = tensor.detach().cpu().contiguous()

    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", **entries})
    os.replace(partial, path)
    return path
