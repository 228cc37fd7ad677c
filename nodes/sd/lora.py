"""LoRA and LyCORIS files: read them, map their keys onto our modules, and turn them into patches.

A LoRA file holds, per patched layer, tensors whose product is a change to the layer's weight:

* LoRA / LoCon (kohya, A1111, LyCORIS): `lora_down` [r, in(, kh, kw)], `lora_up` [out, r(, 1, 1)],
  optional `lora_mid` [r, r, kh, kw] (LoCon's Tucker form) and `alpha`; delta = up @ down
  (through mid), scaled by alpha / r (1 without alpha). Convolutions are flattened to matrices.
* PEFT / diffusers: `lora_A` (= down) and `lora_B` (= up); alpha from `.alpha` keys or the file's
  `lora_adapter_metadata`, else r (scale 1). Older diffusers files name them `lora.down` /
  `lora.up`, or `to_q_lora.down` under an attention `processor`.
* LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, optional Tucker `hada_t1`, `hada_t2`):
  delta = (w1_a @ w1_b) * (w2_a @ w2_b), elementwise, scaled by alpha / r (r = w1_b's rows).
* LoKr (`lokr_w1` or `lokr_w1_a @ lokr_w1_b`, `lokr_w2` or `lokr_w2_a @ lokr_w2_b`, optional
  `lokr_t2`): delta = kron(w1, w2), scaled by alpha / r when a factor is decomposed (r = its
  inner size), else by 1.
* Full differences (`diff`, `diff_b`; LyCORIS' `w_norm`, `b_norm`): the delta as it is.

Layer names come in the families' naming schemes, all mapped onto our module names: kohya's
`lora_unet_` + the module path with `_` for `.` (the diffusers path, or the LDM path as kohya's
SDXL scripts write it), `lora_te_` / `lora_te1_` / `lora_te2_` + the transformers CLIP path
(the family spec's `lora_prefixes` say which text encoder each prefix means); PEFT's `unet.`,
`text_encoder.`, `text_encoder_2.` with dotted paths; `lora_transformer_`-free LDM dotted paths
under `diffusion_model.`. The U-Net's diffusers names are translated by `unet_names`.

`read_lora` parses a file once (kept in the model cache); `lora_patches` maps it onto a model's
modules and reports what it applied and what it could not.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import torch
from torch import nn

from latentgraph.nodes.sd.patches import WeightPatch
from latentgraph.nodes.sd.spec import FamilySpec
from latentgraph.nodes.sd.unet_names import ldm_module_names

__all__ = ["LoraError", "LoraFile", "LoraLayer", "LoraReport", "lora_patches", "read_lora"]


class LoraError(ValueError):
    """A LoRA file that cannot be read or applied; the message says what was found."""


# Tensor name suffixes of one layer, longest first, and what they are.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".processor.to_q_lora.down.weight", "to_q:down"), (".processor.to_q_lora.up.weight", "to_q:up"),
    (".processor.to_k_lora.down.weight", "to_k:down"), (".processor.to_k_lora.up.weight", "to_k:up"),
    (".processor.to_v_lora.down.weight", "to_v:down"), (".processor.to_v_lora.up.weight", "to_v:up"),
    (".processor.to_out_lora.down.weight", "to_out.0:down"), (".processor.to_out_lora.up.weight", "to_out.0:up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),  # diffusers' text encoder names
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".hada_w1_a", "hada_w1_a"), (".hada_w1_b", "hada_w1_b"), (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"), (".hada_t1", "hada_t1"), (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"), (".lokr_w1_b", "lokr_w1_b"), (".lokr_w2_a", "lokr_w2_a"),
    (".lokr_w2_b", "lokr_w2_b"), (".lokr_w1", "lokr_w1"), (".lokr_w2", "lokr_w2"), (".lokr_t2", "lokr_t2"),
    (".diff_b", "diff_b"), (".diff", "diff"), (".w_norm", "diff"), (".b_norm", "diff_b"),
    (".dora_scale", "dora_scale"), (".lora_magnitude_vector", "dora_scale"), (".alpha", "alpha"),
)
_IGNORED_KEYS = ("lora_te_text_model_embeddings_position_ids",)  # a buffer some trainers save


@dataclass(frozen=True, eq=False)
class LoraLayer:
    """The tensors of one patched layer (as stored, on the CPU) and its alpha."""

    name: str  # the layer's name in the file (without the tensor suffix)
    tensors: Mapping[str, torch.Tensor]
    alpha: float | None = None

    @property
    def kind(self) -> str:
        t = self.tensors
        if "dora_scale" in t:
            return "dora"
        if "up" in t and "down" in t:
            return "lora"
        if all(k in t for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
            return "loha"
        if ("lokr_w1" in t or ("lokr_w1_a" in t and "lokr_w1_b" in t)) and \
                ("lokr_w2" in t or ("lokr_w2_a" in t and "lokr_w2_b" in t)):
            return "lokr"
        if "diff" in t or "diff_b" in t:
            return "diff"
        return "incomplete"

    def deltas(self, weight_shape: tuple[int, ...], bias_shape: tuple[int, ...] | None) -> dict[str, "LayerDelta"]:
        """'weight' (and 'bias') -> delta for a layer whose parameters have these shapes."""
        out = {}
        if self.kind == "diff":
            if "diff" in self.tensors:
                out["weight"] = LayerDelta(self, "weight", weight_shape)
            if "diff_b" in self.tensors and bias_shape is not None:
                out["bias"] = LayerDelta(self, "bias", bias_shape)
            return out
        out["weight"] = LayerDelta(self, "weight", weight_shape)
        return out

    def weight_delta(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The layer's weight change at strength 1, float32, shaped `shape`."""
        t = {k: v.to(device=device, dtype=torch.float32) for k, v in self.tensors.items()}
        kind = self.kind
        if kind == "lora":
            up, down = t["up"], t["down"]
            rank = down.shape[0]
            if "mid" in t:  # Tucker: up (1x1) . mid (k x k) . down (1x1)
                delta = torch.einsum("ijkl,jr,pi->prkl", t["mid"], down.flatten(1), up.flatten(1))
            else:
                delta = up.flatten(1) @ down.flatten(1)
            return delta.reshape(shape) * self._scale(rank)
        if kind == "loha":
            rank = t["hada_w1_b"].shape[0]
            w1 = self._tucker(t.get("hada_t1"), t["hada_w1_a"], t["hada_w1_b"])
            w2 = self._tucker(t.get("hada_t2"), t["hada_w2_a"], t["hada_w2_b"])
            return (w1 * w2).reshape(shape) * self._scale(rank)
        if kind == "lokr":
            rank = None
            if "lokr_w1" in t:
                w1 = t["lokr_w1"]
            else:
                w1, rank = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            else:
                rank = t["lokr_w2_b"].shape[0]
                w2 = self._tucker(t.get("lokr_t2"), t["lokr_w2_a"], t["lokr_w2_b"])
            if w2.ndim == 4 and w1.ndim == 2:
                w1 = w1[:, :, None, None]
            scale = self.alpha / rank if (rank is not None and self.alpha is not None) else 1.0
            # kron views its inputs: an einsum's (Tucker) result must be made contiguous first
            return torch.kron(w1.contiguous(), w2.contiguous()).reshape(shape) * scale
        if kind == "diff":
            return t["diff"].reshape(shape)
        raise LoraError(f"layer {self.name} has no weight change this version can apply ({kind})")

    def _scale(self, rank: int) -> float:
        return 1.0 if self.alpha is None else self.alpha / rank

    @staticmethod
    def _tucker(core: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if core is None:
            return a @ b.flatten(1) if b.ndim > 2 else a @ b
        return torch.einsum("ijkl,jr,ip->prkl", core, b, a)


@dataclass(frozen=True, eq=False)
class LayerDelta:
    """One parameter's change from a LoRA layer (a `patches.Delta`)."""

    layer: LoraLayer
    parameter: str  # "weight" or "bias"
    shape: tuple[int, ...]

    def compute(self, device: torch.device) -> torch.Tensor:
        if self.parameter == "bias":
            return self.layer.tensors["diff_b"].to(device=device, dtype=torch.float32).reshape(self.shape)
        return self.layer.weight_delta(self.shape, device)

    def add_to(self, target: torch.Tensor, strength: float) -> None:
        """target += strength x the change; a plain LoRA as one addmm into the target (no
        weight-sized temporary), the other kinds through `compute`."""
        layer, t = self.layer, self.layer.tensors
        if self.parameter == "weight" and layer.kind == "lora" and "mid" not in t and target.is_contiguous():
            up = t["up"].to(device=target.device, dtype=torch.float32).flatten(1)
            down = t["down"].to(device=target.device, dtype=torch.float32).flatten(1)
            matrix = target.view(target.shape[0], -1)
            matrix.addmm_(up, down, alpha=strength * layer._scale(down.shape[0]))
        else:
            target.add_(self.compute(target.device), alpha=strength)


@dataclass(eq=False)
class LoraFile:
    """A parsed LoRA file: its layers by name, and what identifies it."""

    name: str
    layers: dict[str, LoraLayer]
    identity: Hashable
    unknown: list[str] = field(default_factory=list)  # tensor keys that are no part of any known layer

    def cache_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers.values() for t in layer.tensors.values())


@dataclass
class LoraReport:
    """What applying a LoRA did: layers applied per target, and the layers it could not apply."""

    applied: Counter = field(default_factory=Counter)
    skipped: dict[str, str] = field(default_factory=dict)  # layer name -> why
    left_out: Counter = field(default_factory=Counter)  # layers of targets the caller did not give
    unread: list[str] = field(default_factory=list)  # file keys that are no part of any layer this version reads

    def summary(self) -> dict[str, Any]:
        reasons = Counter(self.skipped.values())
        return {
            "applied": dict(self.applied),
            **({"left_out": dict(self.left_out)} if self.left_out else {}),
            "skipped": len(self.skipped),
            "skipped_reasons": dict(reasons),
            "skipped_layers": sorted(self.skipped)[:20],
            **({"unread_keys": len(self.unread), "unread_examples": sorted(self.unread)[:5]} if self.unread else {}),
        }


@dataclass(frozen=True)
class _AdapterAlpha:
    """A PEFT adapter's alphas from its LoraConfig: `lora_alpha`, and `alpha_pattern` (module name
    pattern -> alpha, matched against the module path's end as PEFT matches it)."""

    default: float | None
    patterns: Mapping[str, float]

    def alpha_for(self, module: str) -> float | None:
        for pattern, value in self.patterns.items():
            try:
                if re.match(rf"(.*\.)?({pattern})$", module):
                    return value
            except re.error:
                continue
        return self.default


def _alpha_from_metadata(metadata: Mapping[str, str]) -> dict[str, _AdapterAlpha]:
    """Per-target alphas from diffusers' `lora_adapter_metadata` (PEFT LoraConfig values). diffusers'
    `save_lora_weights` writes them flat, one key per target and field ("unet.lora_alpha",
    "text_encoder.alpha_pattern"...); a nested form ({"unet": {"lora_alpha": ...}}) is read too."""
    text = metadata.get("lora_adapter_metadata")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(config, dict):
        return {}
    fields: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        if isinstance(value, dict) and "." not in key and key not in ("alpha_pattern", "rank_pattern"):
            fields.setdefault(key.rstrip("."), {}).update(value)  # nested
        elif "." in key:
            prefix, _, name = key.rpartition(".")
            fields.setdefault(prefix, {})[name] = value
    out = {}
    for prefix, entry in fields.items():
        default = entry.get("lora_alpha")
        patterns = entry.get("alpha_pattern") if isinstance(entry.get("alpha_pattern"), dict) else {}
        patterns = {str(k): float(v) for k, v in patterns.items() if isinstance(v, (int, float))}
        if isinstance(default, (int, float)) or patterns:
            out[prefix] = _AdapterAlpha(float(default) if isinstance(default, (int, float)) else None, patterns)
    return out


def read_lora(path: str | os.PathLike, allow_pickle: bool = False) -> LoraFile:
    """Parse a LoRA / LyCORIS file (.safetensors; a pickle only with allow_pickle, weights-only)."""
    from latentgraph.nodes.sd.checkpoint import open_tensor_file

    path = Path(path)
    stat = path.stat()
    layers: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    unknown: list[str] = []
    with open_tensor_file(path, allow_pickle) as source:
        metadata_alpha = _alpha_from_metadata(source.metadata)
        for key in source.shapes:
            if key in _IGNORED_KEYS:
                continue
            for suffix, role in _SUFFIXES:
                if key.endswith(suffix):
                    break
            else:
                unknown.append(key)
                continue
            layer = key[: -len(suffix)]
            if ":" in role:  # an attention processor's to_q_lora...: the layer is the projection
                projection, role = role.split(":")
                layer = f"{layer}.{projection}"
            tensor = source.read(key)
            if role == "alpha":
                alphas[layer] = float(tensor.float().reshape(-1)[0])
            else:
                layers.setdefault(layer, {})[role] = tensor
    if not layers:
        from latentgraph.nodes.sd.layout import describe_foreign_keys

        if any(key.startswith("model.diffusion_model.") for key in unknown):
            raise LoraError(f"{path.name} is not a LoRA: it looks like a Stable Diffusion checkpoint (it holds a whole "
                            "U-Net, model.diffusion_model.*); put it in models/checkpoints and load it with the "
                            "checkpoint loader")
        raise LoraError(f"{path.name} is not a LoRA: {describe_foreign_keys(unknown)}")
    parsed = {}
    for name, tensors in layers.items():
        alpha = alphas.get(name)
        if alpha is None and ("up" in tensors and "down" in tensors):
            target, _, module = name.partition(".")
            if target in metadata_alpha:
                alpha = metadata_alpha[target].alpha_for(module)
        parsed[name] = LoraLayer(name, tensors, alpha)
    return LoraFile(path.name, parsed, (str(path), stat.st_size, stat.st_mtime_ns), unknown)


# --- key mapping --------------------------------------------------------------------------------

_PEFT_PREFIXES = {"unet": "unet", "base_model.model": "unet", "diffusion_model": "unet",
                  "model.diffusion_model": "unet", "lora_unet": "unet"}


def _text_module_names(model: nn.Module) -> dict[str, str]:
    """transformers CLIP path (with or without `text_model.`) -> our module path, for modules with parameters."""
    names = {}
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        short = name.removeprefix("text_model.")
        names[short] = name  # transformers >= 5.6 flattened CLIPTextModel: PEFT files saved then lack text_model.
        if not short.startswith("text_projection"):
            names["text_model." + short] = name
    return names


@dataclass
class _Targets:
    """For each target module of a model: how layer names reach its modules."""

    modules: dict[str, nn.Module]  # target -> module
    dotted: dict[str, dict[str, str]]  # target -> dotted name (any scheme) -> our module path
    underscored: dict[str, dict[str, str]]  # target -> name with _ for . -> our module path


def _targets(unet: nn.Module | None, encoders: Mapping[str, nn.Module]) -> _Targets:
    modules, dotted = {}, {}
    if unet is not None:
        names = {name: name for name, m in unet.named_modules() if any(True for _ in m.parameters(recurse=False))}
        names.update(ldm_module_names(unet.config))
        modules["unet"], dotted["unet"] = unet, names
    for name, encoder in encoders.items():
        modules[name], dotted[name] = encoder, _text_module_names(encoder)
    underscored = {target: {k.replace(".", "_"): v for k, v in names.items()} for target, names in dotted.items()}
    return _Targets(modules, dotted, underscored)


def _locate(layer: str, spec: FamilySpec, targets: _Targets) -> tuple[str, str | None] | str:
    """(target, our module path or None when the target has no such layer) for a layer name, or
    why it has none."""
    text_names = [e.name for e in spec.text_encoders]
    for prefix, target in sorted(spec.lora_prefixes.items(), key=lambda kv: -len(kv[0])):
        if layer.startswith(prefix):
            return target, targets.underscored.get(target, {}).get(layer[len(prefix):])
    if re.match(r"lora_te\d?_", layer):
        return "a text encoder this family does not have"
    head, _, rest = layer.partition(".")
    peft_text = {"text_encoder": text_names[0] if text_names else None,
                 "text_encoder_2": text_names[1] if len(text_names) > 1 else None}
    if spec.name == "sdxl_refiner":  # the refiner's only encoder is bigG, diffusers' text_encoder_2
        peft_text = {"text_encoder": None, "text_encoder_2": text_names[0]}
    if head in peft_text:
        target = peft_text[head]
        if target is None:
            return "a text encoder this family does not have"
        return target, targets.dotted.get(target, {}).get(rest)
    for prefix, target in sorted(_PEFT_PREFIXES.items(), key=lambda kv: -len(kv[0])):
        if layer.startswith(prefix + "."):
            return target, targets.dotted.get(target, {}).get(layer[len(prefix) + 1:])
    return "an unknown naming scheme"


def lora_patches(lora: LoraFile, spec: FamilySpec, unet: nn.Module | None, encoders: Mapping[str, nn.Module],
                 strength_model: float, strength_clip: float) -> tuple[list[WeightPatch], LoraReport]:
    """Map a LoRA's layers onto a model's modules: one WeightPatch per target module that any
    layer patches (U-Net at `strength_model`, text encoders at `strength_clip`), and a report.
    Pass unet=None or no encoders to leave them out (a model-only loader). Raises LoraError when
    nothing of the file fits the model, saying what the file looks like."""
    targets = _targets(unet, encoders)
    report = LoraReport(unread=list(lora.unknown))
    deltas: dict[str, dict[str, LayerDelta]] = {}
    claimed: dict[tuple[str, str], str] = {}  # (target, module path) -> the layer that patches it
    for name, layer in lora.layers.items():
        where = _locate(name, spec, targets)
        if isinstance(where, str):
            report.skipped[name] = where
            continue
        target, path = where
        if target not in targets.modules:
            report.left_out[target] += 1  # a model-only loader leaves the text encoders alone
            continue
        if path is None:
            report.skipped[name] = "no such layer"
            continue
        kind = layer.kind
        if kind in ("dora", "incomplete"):
            report.skipped[name] = "DoRA layers are not supported" if kind == "dora" else "incomplete tensors"
            continue
        module = targets.modules[target].get_submodule(path)
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        if weight is None:
            report.skipped[name] = "no such layer"
            continue
        layer_deltas = layer.deltas(tuple(weight.shape), tuple(bias.shape) if bias is not None else None)
        problem = _shape_problem(layer, layer_deltas.get("weight"))
        if problem:
            report.skipped[name] = problem
            continue
        if (target, path) in claimed:  # one module under two names (diffusers' and LDM's): once is meant
            report.skipped[name] = f"patches the same layer as {claimed[target, path]}"
            continue
        claimed[target, path] = name
        for parameter, delta in layer_deltas.items():
            deltas.setdefault(target, {})[f"{path}.{parameter}"] = delta
        report.applied[target] += 1
    if not report.applied and not report.left_out:
        raise LoraError(_nothing_applies(lora, spec, report))
    patches = [
        WeightPatch(target, target_deltas, strength_model if target == "unet" else strength_clip, lora.identity, lora.name)
        for target, target_deltas in deltas.items()
    ]
    return patches, report


def _shape_problem(layer: LoraLayer, delta: LayerDelta | None) -> str | None:
    """Why a layer's tensors cannot make a delta of the parameter's shape (None when they can):
    the delta is computed on the meta device, which checks every shape and costs nothing."""
    if delta is None:
        return None
    try:
        layer.weight_delta(delta.shape, torch.device("meta"))
        fits = "up" not in layer.tensors or layer.tensors["up"].shape[0] == delta.shape[0]
    except (RuntimeError, ValueError, IndexError):
        fits = False
    if fits:
        return None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in layer.tensors.items())
    return f"shape mismatch: the model's weight is {list(delta.shape)}, the file's layer has {shapes}"


def _nothing_applies(lora: LoraFile, spec: FamilySpec, report: LoraReport) -> str:
    reasons = Counter(report.skipped.values())
    examples = ", ".join(sorted(report.skipped)[:3])
    if any(r.startswith("shape mismatch") for r in reasons):
        return (f"{lora.name} does not fit this {spec.label} model: its layers have other shapes (is it a LoRA for "
                f"another family?); for example {next(r for r in report.skipped.values() if r.startswith('shape'))}")
    if reasons.get("a text encoder this family does not have") == len(report.skipped):
        return f"{lora.name} only patches text encoders this {spec.label} model does not have (layers such as {examples})"
    return (f"none of the {len(lora.layers)} layers of {lora.name} matches a layer of this {spec.label} model "
            f"(layers such as {examples}); it may be for another model family or a format this version does not read")
