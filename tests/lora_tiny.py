"""LoRA and LyCORIS files for the tiny checkpoints of tests/sd_tiny.py, in the layouts real files use.

Every writer draws seeded, non-zero up AND down factors (so a LoRA really changes the model, and a
transposed or swapped factor shows), stores them in float16 as trainers do, with an `alpha` per
layer (alpha != rank, so a forgotten alpha / rank scale shows), at a realistic rank (4-8). The
layer lists come from the models as the file formats name them, never from the code under test:

* diffusers names: diffusers' own UNet2DConditionModel built from the tiny config on the meta device
  (tests/diffusers_tiny.py), so `down_blocks.1.attentions.0...` is what diffusers calls the module;
* LDM names (kohya's SDXL scripts): the checkpoint's own key layout (our UNetModel is the file
  format: its parameter names are the checkpoint's `model.diffusion_model.*` keys);
* text encoders: transformers' CLIP names with `text_model.` (as kohya writes them).

Formats (key = layer name + suffix):

    kohya / A1111 LoRA     lora_unet_<path with _>.lora_down.weight / .lora_up.weight / .alpha
                           lora_te_ (SD1.x, SD2.x), lora_te1_ (SDXL CLIP-L), lora_te2_ (SDXL bigG)
    LoCon                  the same on resnet convolutions: down [r, in, 3, 3], up [out, r, 1, 1];
                           Tucker: down [r, in, 1, 1], lora_mid [r, r, 3, 3], up [out, r, 1, 1]
    LoHa                   hada_w1_a [out, r], hada_w1_b [r, in*k*k], hada_w2_a, hada_w2_b, alpha
                           (Tucker: hada_t1/hada_t2 [r, r, k, k], hada_w*_a [r, out], hada_w*_b [r, in])
    LoKr                   lokr_w1 [a, b] + lokr_w2_a [out/a, r] + lokr_w2_b [r, in/b*k*k], alpha;
                           or lokr_w1_a/lokr_w1_b as well (fully decomposed), or lokr_w2 whole
    PEFT / diffusers       what diffusers' `save_lora_weights` writes from peft-wrapped models
                           (see `write_peft_lora`)
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from torch import nn

from latentgraph.nodes.sd.text_encoder import TextEncoderConfig, build_text_encoder
from latentgraph.nodes.sd.unet import UNetConfig, UNetModel

RANK = 8
ALPHA = 4.0  # scale alpha / rank = 0.5
DTYPE = torch.float16

# The transformer-block modules kohya's LoRA trains (its default target: Transformer2DModel), the
# text encoder modules (CLIPAttention, CLIPMLP), and the resnet convolutions LoCon adds.
ATTENTION_SUFFIXES = ("proj_in", "proj_out", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                      "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TEXT_SUFFIXES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
DIFFUSERS_CONV_SUFFIXES = ("conv1", "conv2")  # ResnetBlock2D's 3x3 convolutions
LDM_CONV_SUFFIXES = ("in_layers.2", "out_layers.3")  # the same in the LDM layout


# --- the models' layers, as each format names them -------------------------------------------------


def _layers(model: nn.Module, keep: Callable[[str], bool], prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + name: tuple(module.weight.shape) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and keep(name)}


def diffusers_unet(config: UNetConfig, sdxl: bool = False, device: str = "meta") -> nn.Module:
    """diffusers' UNet2DConditionModel of the tiny config (on the meta device by default)."""
    from diffusers_tiny import unet_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import UNet2DConditionModel

    overrides = {}
    if sdxl:
        overrides = dict(addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=config.adm_in_channels)
    values = {k: v for k, v in unet_config(config, **overrides).items() if not k.startswith("_")}
    with torch.device(device):
        return UNet2DConditionModel(**values)


def diffusers_unet_layers(config: UNetConfig, sdxl: bool = False, convs: bool = False) -> dict[str, tuple[int, ...]]:
    """diffusers module path -> weight shape: every transformer projection (and resnet convs)."""
    def keep(name: str) -> bool:
        if name.endswith(DIFFUSERS_CONV_SUFFIXES):
            return convs and ".resnets." in name
        return name.endswith(ATTENTION_SUFFIXES)

    return _layers(diffusers_unet(config, sdxl), keep)


def ldm_unet_layers(config: UNetConfig, convs: bool = False) -> dict[str, tuple[int, ...]]:
    """LDM (checkpoint) module path -> weight shape: the same modules in the checkpoint's layout."""
    with torch.device("meta"):
        unet = UNetModel(config)
    return _layers(unet, lambda name: name.endswith(ATTENTION_SUFFIXES) or (convs and name.endswith(LDM_CONV_SUFFIXES)))


def text_layers(config: TextEncoderConfig) -> dict[str, tuple[int, ...]]:
    """transformers CLIP path with `text_model.` -> weight shape, for attention and MLP projections."""
    with torch.device("meta"):
        encoder = build_text_encoder(config)
    inner = "" if hasattr(encoder, "text_model") else "text_model."  # transformers >= 5.6 flattened CLIPTextModel
    return _layers(encoder, lambda name: name.endswith(TEXT_SUFFIXES), inner)


def kohya_names(layers: Mapping[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    """kohya's layer names: prefix + the module path with `_` for `.`."""
    return {prefix + name.replace(".", "_"): shape for name, shape in layers.items()}


# --- tensors ------------------------------------------------------------------------------------


def _randn(generator: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=generator) * std).to(DTYPE)


def _alpha(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=DTYPE)


def lora_tensors(layers: Mapping[str, tuple[int, ...]], seed: int, rank: int = RANK, alpha: float | None = ALPHA,
                 tucker: bool = False, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """LoRA / LoCon: lora_down, lora_up (and lora_mid for a Tucker conv), alpha. A 3x3 conv gets a
    3x3 down and a 1x1 up (LoCon); linear layers plain matrices. `scale` sizes the change: at 1,
    up @ down * alpha / rank is about a quarter of the tiny models' weights."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layers.items():
        out_features, in_features, *kernel = shape
        fan_in = in_features * math.prod(kernel)
        up_std = scale * 0.25 * math.sqrt(rank) / (alpha or rank)
        if kernel and tucker and kernel != [1, 1]:
            out[f"{name}.lora_down.weight"] = _randn(generator, rank, in_features, 1, 1, std=1 / math.sqrt(in_features))
            out[f"{name}.lora_mid.weight"] = _randn(generator, rank, rank, *kernel, std=1 / math.sqrt(rank * math.prod(kernel)))
            out[f"{name}.lora_up.weight"] = _randn(generator, out_features, rank, 1, 1, std=up_std)
        else:
            out[f"{name}.lora_down.weight"] = _randn(generator, rank, in_features, *kernel, std=1 / math.sqrt(fan_in))
            out[f"{name}.lora_up.weight"] = _randn(generator, out_features, rank, *([1, 1] if kernel else []), std=up_std)
        if alpha is not None:
            out[f"{name}.alpha"] = _alpha(alpha)
    return out


def loha_tensors(layers: Mapping[str, tuple[int, ...]], seed: int, rank: int = 4, alpha: float = 2.0,
                 tucker: bool = False) -> dict[str, torch.Tensor]:
    """LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank. Tucker (convs): hada_t1/t2 [r, r, k, k]
    with w*_a [r, out] and w*_b [r, in]."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layers.items():
        out_features, in_features, *kernel = shape
        fan_in = in_features * math.prod(kernel)
        std = (0.25 / math.sqrt(fan_in) / alpha) ** 0.25  # (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r: ~1/4 of W
        for i in (1, 2):
            if tucker and kernel and kernel != [1, 1]:
                out[f"{name}.hada_t{i}"] = _randn(generator, rank, rank, *kernel, std=1 / math.sqrt(math.prod(kernel)))
                out[f"{name}.hada_w{i}_a"] = _randn(generator, rank, out_features, std=std)
                out[f"{name}.hada_w{i}_b"] = _randn(generator, rank, in_features, std=std)
            else:
                out[f"{name}.hada_w{i}_a"] = _randn(generator, out_features, rank, std=std)
                out[f"{name}.hada_w{i}_b"] = _randn(generator, rank, fan_in, std=std)
        out[f"{name}.alpha"] = _alpha(alpha)
    return out


def lokr_factor(n: int) -> int:
    """The Kronecker factor LyCORIS' `factorization(n, -1)` picks: the divisor closest to sqrt(n), small side."""
    best = 1
    for d in range(1, int(math.isqrt(n)) + 1):
        if n % d == 0:
            best = d
    return best


def lokr_tensors(layers: Mapping[str, tuple[int, ...]], seed: int, rank: int = 4, alpha: float = 2.0,
                 decompose_w1: bool = False, decompose_w2: bool = True, tucker: bool = False) -> dict[str, torch.Tensor]:
    """LoKr: kron(w1, w2) (scaled by alpha / rank when a factor is decomposed). w1 [a, b] with a, b
    the small factors of out and in; w2 [out/a, in/b(, k, k)] whole or as w2_a [out/a, r] @
    w2_b [r, in/b*k*k] (Tucker: lokr_t2 [r, r, k, k], w2_a [r, out/a], w2_b [r, in/b])."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layers.items():
        out_features, in_features, *kernel = shape
        a, b = lokr_factor(out_features), lokr_factor(in_features)
        p, q = out_features // a, in_features // b
        k = math.prod(kernel)
        if decompose_w1:
            out[f"{name}.lokr_w1_a"] = _randn(generator, a, rank, std=0.5)
            out[f"{name}.lokr_w1_b"] = _randn(generator, rank, b, std=0.5)
        else:
            out[f"{name}.lokr_w1"] = _randn(generator, a, b, std=1.0)
        w2_std = (0.25 / math.sqrt(in_features * k)) ** 0.5
        if not decompose_w2:
            out[f"{name}.lokr_w2"] = _randn(generator, p, q, *kernel, std=0.25 / math.sqrt(in_features * k))
        elif tucker and kernel and kernel != [1, 1]:
            out[f"{name}.lokr_t2"] = _randn(generator, rank, rank, *kernel, std=1 / math.sqrt(k))
            out[f"{name}.lokr_w2_a"] = _randn(generator, rank, p, std=w2_std)
            out[f"{name}.lokr_w2_b"] = _randn(generator, rank, q, std=w2_std)
        else:
            out[f"{name}.lokr_w2_a"] = _randn(generator, p, rank, std=w2_std)
            out[f"{name}.lokr_w2_b"] = _randn(generator, rank, q * k, std=w2_std)
        if decompose_w1 or decompose_w2:
            out[f"{name}.alpha"] = _alpha(alpha)
    return out


def save_lora(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=dict(metadata or {}))
    return path


# --- whole files for the tiny checkpoints ---------------------------------------------------------


def sd15_kohya_layers(convs: bool = False) -> dict[str, tuple[int, ...]]:
    """kohya / A1111 layer names of an SD1.x LoRA for sd_tiny's checkpoint (U-Net in diffusers names)."""
    from sd_tiny import TINY_TEXT_ENCODER, TINY_UNET

    return {**kohya_names(diffusers_unet_layers(TINY_UNET, convs=convs), "lora_unet_"),
            **kohya_names(text_layers(TINY_TEXT_ENCODER), "lora_te_")}


def sdxl_kohya_layers(naming: str = "ldm", convs: bool = False) -> dict[str, tuple[int, ...]]:
    """kohya layer names of an SDXL LoRA for sd_tiny's SDXL base: U-Net in the LDM layout (as kohya's
    sdxl scripts write) or in diffusers' (as its converters write), lora_te1_ CLIP-L, lora_te2_ bigG."""
    from sd_tiny import TINY_CLIP_G, TINY_CLIP_L, TINY_SDXL_UNET

    unet = (ldm_unet_layers(TINY_SDXL_UNET, convs=convs) if naming == "ldm"
            else diffusers_unet_layers(TINY_SDXL_UNET, sdxl=True, convs=convs))
    return {**kohya_names(unet, "lora_unet_"), **kohya_names(text_layers(TINY_CLIP_L), "lora_te1_"),
            **kohya_names(text_layers(TINY_CLIP_G), "lora_te2_")}


def sd2_kohya_layers() -> dict[str, tuple[int, ...]]:
    """kohya layer names of an SD2.x LoRA for sd_tiny's SD2 checkpoint (OpenCLIP-H as transformers CLIP)."""
    from sd_tiny import TINY_OPENCLIP_H, TINY_SD2_UNET

    return {**kohya_names(diffusers_unet_layers(TINY_SD2_UNET), "lora_unet_"),
            **kohya_names(text_layers(TINY_OPENCLIP_H), "lora_te_")}


def write_kohya_lora(path: str | Path, layers: Mapping[str, tuple[int, ...]], seed: int = 100, **options) -> Path:
    """A kohya / A1111-style LoRA (LoCon where the layers include convolutions) with kohya's metadata."""
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(options.get("rank", RANK)),
                "ss_network_alpha": str(options.get("alpha", ALPHA))}
    return save_lora(path, lora_tensors(layers, seed, **options), metadata)


def write_lycoris(path: str | Path, layers: Mapping[str, tuple[int, ...]], algo: str, seed: int = 200, **options) -> Path:
    """A LyCORIS LoHa ("loha") or LoKr ("lokr") file."""
    tensors = loha_tensors(layers, seed, **options) if algo == "loha" else lokr_tensors(layers, seed, **options)
    return save_lora(path, tensors, {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": algo})})


# --- PEFT / diffusers ------------------------------------------------------------------------------

# diffusers' train_dreambooth_lora*.py targets (attention only); with diffusers_names these are the
# layers its converter renames throughout (a file that mixes `to_q.lora.down` with `proj_in.lora_A`
# is one diffusers' own loader misreads: it takes the whole file for PEFT and drops the renamed keys).
TRAINING_SCRIPT_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TRAINING_SCRIPT_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PEFT_UNET_TARGETS = TRAINING_SCRIPT_UNET_TARGETS + ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
PEFT_TEXT_TARGETS = TRAINING_SCRIPT_TEXT_TARGETS + ("fc1", "fc2")


def _seed_lora_factors(model: nn.Module, seed: int, alpha: float, rank: int) -> None:
    """Replace peft's initial factors (B = 0) with seeded non-zero ones of a realistic size."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if ".lora_A." in name:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
            elif ".lora_B." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.125 / math.sqrt(rank) * rank / alpha)


def write_peft_lora(folder: str | Path, pipeline_class: str, unet_config: UNetConfig,
                    text_configs: Mapping[str, TextEncoderConfig], seed: int = 300, rank: int = 4,
                    unet_alpha: float = 8.0, text_alpha: float = 2.0, diffusers_names: bool = True,
                    dtype: torch.dtype = DTYPE, metadata: bool = True) -> Path:
    """What diffusers' training scripts save: peft LoRA adapters on diffusers' UNet2DConditionModel
    and on transformers' CLIP text encoders (text_configs: "text_encoder" / "text_encoder_2" ->
    config), their `get_peft_model_state_dict`, optionally put in diffusers' older names by
    `convert_state_dict_to_diffusers` as diffusers' training scripts do (diffusers_names: their
    attention-only targets, named `to_q.lora.down.weight`, text `q_proj.lora_linear_layer.down.weight`;
    else peft's `lora_A` / `lora_B` on attention, proj_in/out and feed-forward layers), in `dtype`, written
    by `<pipeline_class>.save_lora_weights` with each adapter's LoraConfig as `lora_adapter_metadata`
    (metadata=False: without, as older diffusers wrote them; alphas are then lost and diffusers
    takes alpha = rank). Returns the .safetensors file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import diffusers
        from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    sdxl = "text_encoder_2" in text_configs
    unet = diffusers_unet(unet_config, sdxl=sdxl, device="cpu")
    unet_lora = LoraConfig(r=rank, lora_alpha=unet_alpha, target_modules=list(
        TRAINING_SCRIPT_UNET_TARGETS if diffusers_names else PEFT_UNET_TARGETS))
    unet.add_adapter(unet_lora)
    _seed_lora_factors(unet, seed, unet_alpha, rank)
    text_lora = LoraConfig(r=rank, lora_alpha=text_alpha, target_modules=list(
        TRAINING_SCRIPT_TEXT_TARGETS if diffusers_names else PEFT_TEXT_TARGETS))
    layers: dict[str, dict[str, torch.Tensor]] = {}
    adapters: dict[str, dict] = {}

    def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
        state = get_peft_model_state_dict(model)
        if diffusers_names:
            state = convert_state_dict_to_diffusers(state)
        return {k: v.to(dtype) for k, v in state.items()}

    layers["unet_lora_layers"] = state_of(unet)
    adapters["unet_lora_adapter_metadata"] = unet_lora.to_dict()
    for index, (name, config) in enumerate(text_configs.items()):
        encoder = build_text_encoder(config)
        # transformers' own add_adapter wants peft >= 0.22; diffusers injects with peft directly too.
        inject_adapter_in_model(text_lora, encoder)
        _seed_lora_factors(encoder, seed + 1 + index, text_alpha, rank)
        layers[f"{name}_lora_layers"] = state_of(encoder)
        adapters[f"{name}_lora_adapter_metadata"] = text_lora.to_dict()
    folder = Path(folder)
    getattr(diffusers, pipeline_class).save_lora_weights(folder, **layers, **(adapters if metadata else {}))
    return folder / "pytorch_lora_weights.safetensors"
