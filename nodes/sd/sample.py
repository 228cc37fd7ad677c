"""Denoise latents: noise, guidance and a sampler put together (what the sampler nodes call)."""

from __future__ import annotations

from typing import Callable

import torch

from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser, GuidanceEntry
from latentgraph.nodes.sd.handles import Conditioning, DiffusionModel, Latent, Noise, SamplerChoice
from latentgraph.nodes.sd.samplers import SAMPLERS, default_noise_sampler

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step done, total, denoised estimate)


def guided_model(model: DiffusionModel, positive: Conditioning, negative: Conditioning | None, cfg: float) -> CFGDenoiser:
    """The sampler's model: the U-Net as a denoiser with classifier-free guidance over every prompt
    of both sides (one U-Net call per step; see CFGDenoiser)."""
    denoiser = Denoiser(model.net, model.schedule, model.prediction_type)
    device = model.device

    def entries(side: Conditioning) -> list[GuidanceEntry]:  # moved to the model's device once, not every step
        return [GuidanceEntry(e.embedding.to(device, torch.float32), e.strength) for e in side.entries]

    if not positive.entries:
        raise ValueError("positive conditioning is empty")
    return CFGDenoiser(denoiser, entries(positive), entries(negative) if negative is not None else None, cfg)


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
