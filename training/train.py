"""Train the demo model on the shapes dataset and write it as one SD1.x LDM-layout checkpoint.

    python -m latentgraph.training.train [--output models/checkpoints/latentgraph-demo.safetensors] [--seed 0]

Four stages, on the CPU by default (2 threads; `--device cuda` runs them on a GPU):

1. The VAE (`nodes.sd.vae.AutoencoderKL`, SD's architecture, narrow): images to an 8x smaller,
   4-channel latent and back, with an L1 + L2 reconstruction loss weighted towards the shapes and
   a small KL term. It trains on collages of several shapes, which teach it shapes faster.
2. Its latent scaling factor, 1 / std of the latents of held-out images, so the U-Net sees unit
   variance as SD's does; stored in the file's `latentgraph.vae_scaling_factor` metadata.
3. The CLIP text encoder alone, for a few hundred steps: linear heads read each attribute a
   caption names (colour, shape, background, size, position) from its mean token state. Without
   this the diffusion loss teaches it colours but not positions (see `pretrain_text_encoder`).
4. The U-Net and the text encoder together, with the VAE frozen: SD1.x's scaled-linear
   1000-step schedule, epsilon prediction, min-SNR loss weighting (with a floor for the noisiest
   steps, where the layout is decided), 10% of captions replaced by the empty prompt so
   classifier-free guidance has an unconditional model to push away from, and the attribute loss
   of stage 3 kept on lightly. An exponential moving average of the weights is what gets saved.

Everything is drawn from `--seed`: the same seed and thread count give the same tensors and
metadata (safetensors orders its header freely, so not always the same bytes). The
checkpoint goes through `nodes.sd.checkpoint.save_checkpoint`, so it is loaded, detected (sd1)
and run exactly like a downloaded SD1.5 file.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.training.dataset import (
    COLOURS,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    Mentions,
    ShapeSpec,
    ShapesDataset,
    caption,
)
from latentgraph.nodes.sd.families import SD1
from latentgraph.nodes.sd.layout import SCALING_FACTOR_METADATA_KEY
from latentgraph.nodes.sd.text_encoder import TextEncoderConfig, build_text_encoder
from latentgraph.nodes.sd.unet import UNetConfig, UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL, VAEConfig

DEFAULT_OUTPUT = Path("models/checkpoints/latentgraph-demo.safetensors")

# Widths are multiples of 32 (every GroupNorm has 32 groups). The loader infers SD1.x U-Nets with
# 8 heads, so the transformer widths split into 8 heads; the text encoder's width is a multiple
# of 64 (CLIP heads are 64 wide) and is the U-Net's context_dim.
DEMO_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
DEMO_TEXT_ENCODER = TextEncoderConfig(hidden_size=64, num_layers=2, intermediate_size=256)
DEMO_UNET = UNetConfig(
    model_channels=64,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(4, 2, 1),
    transformer_depth=1,
    num_heads=8,
    context_dim=DEMO_TEXT_ENCODER.hidden_size,
)


@dataclass
class TrainSettings:
    seed: int = 0
    image_size: int = IMAGE_SIZE
    threads: int = 2
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-4
    vae_shape_weight: float = 4.0
    scale_images: int = 1024  # held-out images the scaling factor is measured on
    unet_steps: int = 2400
    unet_batch: int = 64
    unet_lr: float = 1e-3
    text_lr: float = 1e-3
    uncond_probability: float = 0.1
    text_pretrain_steps: int = 400
    text_pretrain_batch: int = 128
    text_aux_weight: float = 0.1  # the attribute loss keeps running, lightly, beside the diffusion loss
    train_text_with_unet: bool = True  # False: freeze the text encoder after its pretraining (as SD froze CLIP)
    min_snr_gamma: float = 5.0
    high_noise_share: float = 0.0
    x0_weight_floor: float = 0.1
    ema_decay: float = 0.999
    warmup_steps: int = 100
    bf16: bool = True  # bf16 autocast where it is measurably faster (the VAE); never fp16 on the CPU
    device: str = "cpu"  # random numbers are drawn on the CPU whatever the device
    vae: VAEConfig = DEMO_VAE
    unet: UNetConfig = DEMO_UNET
    text_encoder: TextEncoderConfig = DEMO_TEXT_ENCODER


# --- progress -------------------------------------------------------------------------------------


class Progress:
    """A plain-text progress bar: one line redrawn in place on a terminal, otherwise a line every
    `every` seconds and at the end (so logs stay short)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, every: float = 30.0):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.start = time.perf_counter()
        self.last_print = -math.inf
        self.last_line_length = 0

    def update(self, done: int, **metrics: float) -> None:
        now = time.perf_counter()
        final = done >= self.total
        if not final and now - self.last_print < (0.25 if self.tty else self.every):
            return
        self.last_print = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        width = 24
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        line = f"{self.label} [{bar}] {done}/{self.total} {_clock(elapsed)} elapsed, {_clock(eta)} left {shown}"
        if self.tty:
            padding = " " * max(0, self.last_line_length - len(line))
            self.stream.write("\r" + line + padding + ("\n" if final else ""))
            self.last_line_length = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- helpers --------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's floating parameters (warmed up: the decay grows
    from 0 so early averages are not dominated by the random initialisation)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = [p for p in self.module.parameters()]
        current = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(averaged, current, 1 - decay)


def _autocast(enabled: bool, device: str = "cpu"):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --- stage 1: VAE ---------------------------------------------------------------------------------


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over latent elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def shape_weight(images: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-pixel loss weight [B, 1, H, W]: 1 on the background, 1 + extra on and around the shape
    (pixels that differ from the image's border colour, grown by one pixel). The shape covers a
    few percent of the image; without this the loss is mostly background and shapes come late."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    mask = ((images - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    mask = F.max_pool2d(mask, 3, stride=1, padding=1)
    return 1.0 + extra * mask


def train_vae(settings: TrainSettings, progress_stream: TextIO | None = None) -> tuple[AutoencoderKL, dict]:
    generator = set_seed(settings.seed)
    device = torch.device(settings.device)
    vae = AutoencoderKL(settings.vae).train()
    with torch.no_grad():  # start with little posterior noise (std 0.05) so reconstructions learn fast
        vae.quant_conv.bias[settings.vae.embed_dim:] = -6.0
    vae.to(device)
    data = ShapesDataset(settings.seed, settings.image_size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    progress = Progress("vae ", settings.vae_steps, progress_stream)
    smoothed = None
    for step in range(settings.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.vae_lr * lr_factor(step, settings.vae_steps, settings.warmup_steps)
        images = data.collages(step * settings.vae_batch, settings.vae_batch).to(device)
        with _autocast(settings.bf16, settings.device):
            distribution = vae.encode(images)
            latent = distribution.sample(generator)
            reconstruction = vae.decode(latent).float()
        error = reconstruction - images
        weight = shape_weight(images, settings.vae_shape_weight)
        rec = ((error.abs() + error.pow(2)) * weight).mean() / weight.mean()
        kl = kl_divergence(distribution.mean.float(), distribution.logvar.float())
        loss = rec + settings.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        smoothed = rec.item() if smoothed is None else 0.98 * smoothed + 0.02 * rec.item()
        progress.update(step + 1, rec=smoothed, kl=kl.item())
    vae.eval().requires_grad_(False).cpu()
    return vae, {"vae_reconstruction_loss": smoothed, "vae_kl": kl.item()}


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, settings: TrainSettings) -> float:
    """1 / std of the (mean) latents of held-out images: the diffusion model then sees unit variance."""
    held_out = ShapesDataset(settings.seed + 1_000_003, settings.image_size)
    latents = []
    for start in range(0, settings.scale_images, 128):
        images, _ = held_out.batch(start, min(128, settings.scale_images - start))
        latents.append(vae.encode(images.to(vae_device(vae))).mean.float().cpu())
    return float(1.0 / torch.cat(latents).std())


def vae_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# --- stage 3: U-Net and text encoder --------------------------------------------------------------


class CaptionTokens:
    """Captions to CLIP ids [77] with the same tokenizer and chunking the prompt node uses."""

    def __init__(self) -> None:
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        from latentgraph.nodes.sd.prompt import tokenize_prompt

        rows = []
        for text in captions:
            ids = self.cache.get(text)
            if ids is None:
                ids = self.cache[text] = tokenize_prompt(text).ids[0]
            rows.append(ids)
        return torch.stack(rows)


def encode_captions(text_encoder: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's last hidden state, exactly what `nodes.sd.prompt.encode_tokens` gives
    the sampler (clip_skip 1), but with gradients."""
    return text_encoder(input_ids=ids).last_hidden_state


def epsilon_loss_weights(snr: torch.Tensor, gamma: float, floor: float) -> torch.Tensor:
    """Per-timestep weights of the epsilon MSE, normalised to mean 1.

    An epsilon error e at signal-to-noise ratio SNR is an error of e / sqrt(SNR) in the denoised
    image, so the plain epsilon loss weighs image errors by SNR. Min-SNR-gamma caps that at gamma
    (low-noise steps stop dominating); the floor lifts the noisiest steps, where SNR is near 0 and
    the plain loss barely sees the image at all, yet where the sampler decides what goes where:
    without it the layout (the shape's position) is learned last, long after colours.
    """
    image_weight = snr.clamp(max=gamma).clamp(min=floor)
    weights = image_weight / snr
    return weights / weights.mean()


def sample_timesteps(batch: int, total: int, high_share: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform training timesteps, except that a `high_share` of the batch is drawn from the noisier
    half, where the layout (what goes where, in which colour) is decided."""
    t = torch.randint(0, total, (batch,), generator=generator)
    high = torch.randint(total // 2, total, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < high_share, high, t)


ATTRIBUTE_CLASSES = {  # what the text encoder's pretraining heads predict; "" = not named
    "colour": ("",) + tuple(COLOURS),
    "shape": SHAPES,
    "background": ("",) + tuple(COLOURS),
    "size": ("",) + tuple(SIZES),
    "position": ("",) + tuple(POSITIONS),
}


def attribute_labels(spec: ShapeSpec | None, mentions: Mentions | None) -> list[int]:
    """Class index per ATTRIBUTE_CLASSES entry for a caption (None, None: the empty prompt)."""
    labels = []
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        named = spec is not None and (attribute == "shape" or getattr(mentions, attribute))
        labels.append(classes.index(getattr(spec, attribute)) if named else (0 if classes[0] == "" else -100))
    return labels


class AttributeHeads(nn.Module):
    """Linear read-outs of each caption attribute from the mean of the text encoder's token states:
    what a cross-attention that has not learned where to look yet receives. Used only in training."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(classes)) for classes in ATTRIBUTE_CLASSES.values())

    def loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pooled = states.float().mean(dim=1)
        losses = [F.cross_entropy(head(pooled), labels[:, i], ignore_index=-100) for i, head in enumerate(self.heads)]
        return torch.stack([l for l in losses if torch.isfinite(l)]).mean()


def pretrain_text_encoder(text_encoder: nn.Module, heads: AttributeHeads, settings: TrainSettings,
                          tokens: "CaptionTokens", progress_stream: TextIO | None = None) -> float:
    """Teach the text encoder to tell the captions' attributes apart before the U-Net needs them.

    The diffusion loss alone trains the text encoder only through what the U-Net already uses:
    colours (a global tint) come quickly, but positions need the U-Net to look in the right place
    and the text to say where, and neither starts without the other; left to that loss, the
    states of "top left" and "bottom right" captions end up 0.2% apart and the U-Net draws the
    shape wherever the noise puts it. A few hundred steps of predicting every attribute from
    the mean token state break that circle.
    """
    device = torch.device(settings.device)
    data = ShapesDataset(settings.seed + 3, settings.image_size)
    parameters = list(text_encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=settings.text_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed + 3)
    progress = Progress("text", settings.text_pretrain_steps, progress_stream)
    batch = settings.text_pretrain_batch
    smoothed = float("nan")
    for step in range(settings.text_pretrain_steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.text_lr * lr_factor(step, settings.text_pretrain_steps, settings.warmup_steps)
        described = [data.described(step * batch + i) for i in range(batch)]
        drop = (torch.rand(batch, generator=generator) < settings.uncond_probability).tolist()
        captions = ["" if d else caption(spec, mentions) for (spec, mentions), d in zip(described, drop)]
        labels = torch.tensor([attribute_labels(None, None) if d else attribute_labels(spec, mentions)
                               for (spec, mentions), d in zip(described, drop)])
        loss = heads.loss(encode_captions(text_encoder, tokens(captions).to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = loss.item() if step == 0 else 0.95 * smoothed + 0.05 * loss.item()
        progress.update(step + 1, loss=smoothed)
    return smoothed


class FrozenContexts:
    """Text encoder states per caption, computed once: with the text encoder frozen, the
    captions (a few thousand distinct ones) need encoding only the first time they come."""

    def __init__(self, text_encoder: nn.Module, tokens: CaptionTokens):
        self.text_encoder, self.tokens = text_encoder, tokens
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        missing = sorted({text for text in captions if text not in self.cache})
        if missing:
            device = next(self.text_encoder.parameters()).device
            states = encode_captions(self.text_encoder, self.tokens(missing).to(device))
            self.cache.update(zip(missing, states))
        return torch.stack([self.cache[text] for text in captions])


StepCallback = Callable[[int, nn.Module, nn.Module], None]


def train_diffusion(
    vae: AutoencoderKL, scaling_factor: float, settings: TrainSettings, progress_stream: TextIO | None = None,
    on_step: StepCallback | None = None,
) -> tuple[UNetModel, nn.Module, dict]:
    """Train the U-Net (and, unless frozen after pretraining, the text encoder) on `vae`'s latents.

    on_step(steps_done, unet, text_encoder) is called after every step with the EMA models."""

    device = torch.device(settings.device)
    generator = set_seed(settings.seed + 1)
    unet = UNetModel(settings.unet).train()
    text_encoder = build_text_encoder(settings.text_encoder).train().requires_grad_(True)
    unet.to(device)
    text_encoder.to(device)
    vae = vae.to(device)
    ema_unet = EMA(unet, settings.ema_decay)

    schedule = SD1.schedule.build()
    alphas_cumprod = (1.0 / (schedule.sigmas**2 + 1)).float()  # sigma^2 = (1 - a) / a
    snr = alphas_cumprod / (1 - alphas_cumprod)
    loss_weight = epsilon_loss_weights(snr, settings.min_snr_gamma, settings.x0_weight_floor)

    tokens = CaptionTokens()
    heads = AttributeHeads(settings.text_encoder.hidden_size).to(device)
    stats = {}
    if settings.text_pretrain_steps:
        stats["text_pretrain_loss"] = pretrain_text_encoder(text_encoder, heads, settings, tokens, progress_stream)
    train_text = settings.train_text_with_unet
    # Adam without weight decay: token embeddings of words the captions never use get no gradient
    # and so stay exactly as initialised.
    groups = [{"params": list(unet.parameters()), "lr": settings.unet_lr}]
    if train_text:
        groups.append({"params": list(text_encoder.parameters()), "lr": settings.text_lr})
        if settings.text_aux_weight:
            groups.append({"params": list(heads.parameters()), "lr": settings.text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    base_lrs = [group["lr"] for group in groups]
    trained = [p for group in groups for p in group["params"]]
    if train_text:
        ema_text = EMA(text_encoder, settings.ema_decay)
        frozen = None
    else:
        text_encoder.eval().requires_grad_(False)
        frozen = FrozenContexts(text_encoder, tokens)

    data = ShapesDataset(settings.seed + 2, settings.image_size)
    progress = Progress("unet", settings.unet_steps, progress_stream)
    smoothed = None
    batch = settings.unet_batch
    for step in range(settings.unet_steps):
        factor = lr_factor(step, settings.unet_steps, settings.warmup_steps)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        examples = [data.example(step * batch + i) for i in range(batch)]
        images = torch.from_numpy(np.stack([e.image for e in examples]).astype(np.float32) / 127.5 - 1.0)
        images = images.permute(0, 3, 1, 2).contiguous().to(device)
        drop = (torch.rand(batch, generator=generator) < settings.uncond_probability).tolist()
        captions = ["" if dropped else e.caption for e, dropped in zip(examples, drop)]
        with torch.no_grad(), _autocast(settings.bf16, settings.device):
            latents = vae.encode(images).mean.float() * scaling_factor
        t = sample_timesteps(batch, schedule.num_timesteps, settings.high_noise_share, generator)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1).to(device)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise

        if frozen is not None:
            context = frozen(captions)
        else:
            context = encode_captions(text_encoder, tokens(captions).to(device))
        prediction = unet(noisy, t.to(device), context)
        per_item = (prediction.float() - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_item * loss_weight[t].to(device)).mean()
        if train_text and settings.text_aux_weight:
            labels = torch.tensor([attribute_labels(None, None) if dropped else attribute_labels(e.spec, e.mentions)
                                   for e, dropped in zip(examples, drop)])
            loss = loss + settings.text_aux_weight * heads.loss(context, labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        ema_unet.update(unet)
        if train_text:
            ema_text.update(text_encoder)
        plain = per_item.mean().item()
        smoothed = plain if smoothed is None else 0.99 * smoothed + 0.01 * plain
        progress.update(step + 1, mse=smoothed)
        if on_step is not None:
            on_step(step + 1, ema_unet.module, ema_text.module if train_text else text_encoder)
    final_text = ema_text.module if train_text else text_encoder
    return ema_unet.module.cpu(), final_text.cpu(), {**stats, "diffusion_mse": smoothed}


# --- all together ---------------------------------------------------------------------------------


def train(settings: TrainSettings, output: Path, progress_stream: TextIO | None = None,
          vae_from: Path | None = None) -> dict:
    """Train all three models and save the checkpoint to `output`; returns a summary dict.

    vae_from: take the VAE and its scaling factor from this checkpoint instead of training one
    (to retrain only the U-Net and text encoder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(settings, output, progress_stream, vae_from)
    finally:
        torch.set_num_threads(threads)


def _train(settings: TrainSettings, output: Path, progress_stream: TextIO | None, vae_from: Path | None) -> dict:
    from latentgraph.nodes.sd.checkpoint import load_vae, save_checkpoint

    started = time.perf_counter()
    log(f"training the demo model (seed {settings.seed}, {settings.threads} threads, "
        f"{settings.image_size}x{settings.image_size} images)")
    if vae_from is not None:
        vae = load_vae(vae_from).eval().requires_grad_(False)
        scaling_factor = vae.config.scaling_factor
        vae_stats = {"vae_from": str(vae_from)}
        log(f"VAE from {vae_from}: scaling factor {scaling_factor:.5f}")
    else:
        vae, vae_stats = train_vae(settings, progress_stream)
        scaling_factor = measure_scaling_factor(vae, settings)
        log(f"VAE: reconstruction loss {vae_stats['vae_reconstruction_loss']:.4f}, scaling factor "
            f"{scaling_factor:.5f} ({(time.perf_counter() - started) / 60:.1f} min)")
        vae.config = replace(vae.config, scaling_factor=scaling_factor)
    vae_seconds = time.perf_counter() - started
    unet, text_encoder, diffusion_stats = train_diffusion(vae, scaling_factor, settings, progress_stream)
    seconds = time.perf_counter() - started
    summary = {
        **vae_stats,
        **diffusion_stats,
        "vae_scaling_factor": scaling_factor,
        "train_seconds": round(seconds, 1),
        "vae_seconds": round(vae_seconds, 1),
    }
    metadata = {
        SCALING_FACTOR_METADATA_KEY: repr(scaling_factor),
        # Settings and losses, not timings: the same seed and thread count give the same metadata.
        "latentgraph.demo": json.dumps({"settings": _jsonable(asdict(settings)),
                                        "summary": {k: v for k, v in summary.items() if not k.endswith("seconds")}}),
        "modelspec.title": "Latentgraph demo (coloured shapes, 64x64)",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.resolution": f"{settings.image_size}x{settings.image_size}",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output, unet, vae, text_encoder, metadata=metadata, dtype=torch.float16)
    summary["checkpoint_bytes"] = output.stat().st_size
    log(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) after {seconds / 60:.1f} min; "
        f"diffusion loss {diffusion_stats['diffusion_mse']:.4f}")
    return summary


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None) -> tuple[TrainSettings, argparse.Namespace]:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(
        prog="python -m latentgraph.training.train",
        description="Train the bundled demo model (coloured shapes, 64x64) on the CPU and write its checkpoint.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"checkpoint path (default {DEFAULT_OUTPUT})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="everything is drawn from it (default 0)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads (default 2)")
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    parser.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    parser.add_argument("--vae-batch", type=int, default=defaults.vae_batch)
    parser.add_argument("--unet-batch", type=int, default=defaults.unet_batch)
    parser.add_argument("--unet-lr", type=float, default=defaults.unet_lr)
    parser.add_argument("--text-lr", type=float, default=defaults.text_lr)
    parser.add_argument("--vae-from", type=Path, metavar="CHECKPOINT",
                        help="reuse this checkpoint's VAE (and scaling factor); train only the U-Net and text encoder")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 throughout")
    parser.add_argument("--device", default=defaults.device, help="cpu (default) or cuda; random numbers are drawn on the CPU either way")
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage, to check the pipeline")
    parser.add_argument("--evaluate", type=int, default=0, metavar="N",
                        help="afterwards, generate N prompts through the node graph and report accuracy")
    parser.add_argument("--summary", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    settings = replace(
        defaults,
        seed=args.seed,
        threads=args.threads,
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        vae_batch=args.vae_batch,
        unet_batch=args.unet_batch,
        unet_lr=args.unet_lr,
        text_lr=args.text_lr,
        bf16=not args.no_bf16,
        device=args.device,
    )
    if args.quick:
        settings = replace(settings, vae_steps=20, unet_steps=20, text_pretrain_steps=20, warmup_steps=5, scale_images=128)
    return settings, args


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    summary = train(settings, args.output, vae_from=args.vae_from)
    if args.evaluate:
        from latentgraph.training.evaluate import evaluate_checkpoint

        summary["evaluation"] = evaluate_checkpoint(args.output, prompts=args.evaluate, seed=settings.seed)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
