"""Denoise latents: noise, guidance and a sampler put together (what the sampler nodes call)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch

from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser
from latentgraph.nodes.sd.handles import Conditioning, DiffusionModel, Latent, Noise, SamplerChoice
from latentgraph.nodes.sd.samplers import SAMPLERS, default_noise_sampler

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step done, total, denoised estimate)


def _stack(entries: Conditioning, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every entry as one batch [N, tokens, dim] (tokens repeated to a common length)
    and their normalised strengths [N]."""
    if not entries.entries:
        raise ValueError(f"{name} conditioning is empty")
    embeddings = [entry.embedding for entry in entries.entries]
    tokens = math.lcm(*(e.shape[1] for e in embeddings))  # repeating tokens leaves attention unchanged
    stacked = torch.cat([e.repeat(1, tokens // e.shape[1], 1) for e in embeddings])
    strengths = torch.tensor([entry.strength for entry in entries.entries], dtype=torch.float32)
    return stacked, strengths / strengths.sum()


class CombinedCFGDenoiser:
    """CFG over several positive and negative prompts: each side is the strength-weighted mean of
    its prompts' denoised estimates, then uncond + cfg * (cond - uncond)."""

    def __init__(self, denoiser: Denoiser, positive: Conditioning, negative: Conditioning, cfg_scale: float):
        self.denoiser = denoiser
        self.positive = _stack(positive, "positive")
        self.negative = _stack(negative, "negative")
        self.cfg_scale = cfg_scale

    def _side(self, x: torch.Tensor, sigma: torch.Tensor, side: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        embeddings, weights = side
        total = torch.zeros_like(x)
        for embedding, weight in zip(embeddings, weights.tolist()):
            cond = embedding[None].expand(x.shape[0], -1, -1)
            total = total + weight * self.denoiser(x, sigma, cond)
        return total

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = self._side(x, sigma, self.positive)
        if self.cfg_scale == 1.0:
            return cond
        uncond = self._side(x, sigma, self.negative)
        return uncond + self.cfg_scale * (cond - uncond)


def guided_model(model: DiffusionModel, positive: Conditioning, negative: Conditioning | None, cfg: float):
    """The sampler's model: the U-Net as a denoiser with classifier-free guidance."""
    denoiser = Denoiser(model.net, model.schedule, model.prediction_type)
    device = model.device

    def placed(side: Conditioning) -> Conditioning:  # moved to the model's device once, not every step
        return Conditioning(tuple(replace(e, embedding=e.embedding.to(device, torch.float32)) for e in side.entries))

    positive = placed(positive)
    negative = placed(negative) if negative is not None else None
    if negative is None or (len(positive.entries) == 1 and len(negative.entries) == 1):
        uncond = negative.entries[0].embedding if negative is not None else None
        return CFGDenoiser(denoiser, positive.entries[0].embedding, uncond, cfg)
    return CombinedCFGDenoiser(denoiser, positive, negative, cfg)


def denoise_latents(
    model: DiffusionModel,
    positive: Conditioning,
    negative: Conditioning | None,
    latent: Latent,
    noise: Noise,
    sigmas: torch.Tensor,
    sampler: SamplerChoice,
    cfg: float,
    on_step: StepCallback | None = None,
) -> Latent:
    """Add the seeded noise at sigmas[0] to the latent and walk the sampler down `sigmas`.

    An empty latent gives text-to-image; a VAE-encoded image with a shortened schedule (denoise < 1)
    gives image-to-image. Sampling runs in float32 on the model's device; the U-Net in its own dtype.
    """
    if sampler.name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler.name!r}; expected one of {', '.join(SAMPLERS)}")
    samples = latent.samples
    if samples.shape[1] != model.latent_channels:
        raise ValueError(f"the latent has {samples.shape[1]} channels but the model expects {model.latent_channels}")
    if sigmas.numel() < 2:
        return latent
    device = model.device
    sigmas = sigmas.to(device=device, dtype=torch.float32)
    x = samples.to(device, torch.float32) + noise.generate(samples).to(device) * sigmas[0]
    total = sigmas.numel() - 1

    def callback(info: dict) -> None:
        if on_step is not None:
            on_step(info["i"] + 1, total, info["denoised"])

    sample = SAMPLERS[sampler.name]
    result = sample(
        guided_model(model, positive, negative, cfg),
        x,
        sigmas,
        callback=callback,
        noise_sampler=default_noise_sampler(x, (noise.seed + 1) % 2**64),  # not the initial noise's stream
        **sampler.options,
    )
    return Latent(result.float().cpu(), latent.noise_mask)
