"""Denoise latents: noise, guidance and a sampler put together (what the sampler nodes call)."""

from __future__ import annotations

from typing import Callable

import torch

from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser, GuidanceEntry
from latentgraph.nodes.sd.handles import Conditioning, DiffusionModel, Latent, Noise, SamplerChoice
from latentgraph.nodes.sd.samplers import SAMPLERS, default_noise_sampler

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step done, total, denoised estimate)


def guided_model(model: DiffusionModel, positive: Conditioning, negative: Conditioning | None, cfg: float,
                 size: tuple[int, int] | None = None, latent: Latent | None = None) -> CFGDenoiser:
    """The sampler's model: the U-Net as a denoiser with classifier-free guidance over every prompt
    of both sides (one U-Net call per step; see CFGDenoiser).

    For families whose U-Net reads an extra conditioning vector (SDXL), each prompt's vector is
    built by the family spec from the prompt's pooled text and extra inputs, with `size` (the
    image's width and height in pixels) where the prompt leaves its size inputs unset.

    Prompts with ControlNets (apply_controlnet) get them ready for this run: hints fitted to
    `size`, start/end percents as sigmas of the model's schedule (`controlnet.prepare_controls`).

    An inpainting U-Net gets each prompt's extra input channels (`inpaint.inpaint_concat`: the
    prompt's masked image and mask, else the sampled `latent` and its noise mask)."""
    denoiser = Denoiser(model.net, model.schedule, model.prediction_type)
    device = model.device
    vector = model.spec.vector
    prepared_controls: dict = {}  # shared by prompts that share a ControlNet application
    concats: dict = {}  # by the prompt's InpaintImage (None: the latent's own), computed once

    def concat_for(e) -> torch.Tensor | None:
        if model.unet.config.in_channels == model.latent_channels:  # not an inpainting U-Net: nothing to add
            return None
        if latent is None:
            raise ValueError(f"{model.source} is an inpainting model: it needs the latent it samples")
        key = id(e.inpaint)
        if key not in concats:
            from latentgraph.nodes.sd.inpaint import inpaint_concat

            concats[key] = inpaint_concat(model.spec, e.inpaint, latent.samples, latent.noise_mask).to(device)
        return concats[key]

    def entries(side: Conditioning, name: str) -> list[GuidanceEntry]:  # moved to the device once, not every step
        out = []
        for e in side.entries:
            _check_width(model, e, name)
            y = None
            if vector is not None:
                if size is None:
                    raise ValueError(f"a {model.spec.label} model needs the image size to build its conditioning vector")
                y = vector(e, name, size).to(device, torch.float32)
            control = None
            if e.control:
                from latentgraph.nodes.sd.controlnet import prepare_controls

                control = prepare_controls(e.control, model, size, prepared_controls)
            sigma_range = None
            if e.timestep_range is not None:
                from latentgraph.nodes.sd.controlnet import percent_to_sigma

                sigma_range = (percent_to_sigma(model.schedule, e.timestep_range[0]),
                               percent_to_sigma(model.schedule, e.timestep_range[1]))
            out.append(GuidanceEntry(e.embedding.to(device, torch.float32), e.strength, y, control, concat_for(e),
                                     e.area, sigma_range, None if e.mask is None else e.mask.to(device),
                                     e.mask_strength, e.mask_bounds))
        return out

    if not positive.entries:
        raise ValueError("positive conditioning is empty")
    return CFGDenoiser(denoiser, entries(positive, "positive"), entries(negative, "negative") if negative is not None else None, cfg,
                       rescale=model.cfg_rescale)


def _check_width(model: DiffusionModel, entry, side: str) -> None:
    """A prompt encoded by another family's text encoder cannot be read by this U-Net: say so."""
    width = entry.embedding.shape[-1]
    expected = model.unet.config.context_dim
    if width != expected:
        raise ValueError(f"the {side} prompt is {width} channels wide but {model.source} ({model.label}) reads "
                         f"{expected}: encode it with the text encoder of the same checkpoint")


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
    add_noise: bool = True,
) -> Latent:
    """Add the seeded noise at sigmas[0] to the latent and walk the sampler down `sigmas`.

    An empty latent gives text-to-image; a VAE-encoded image with a shortened schedule (denoise < 1)
    gives image-to-image. Sampling runs in float32 on the model's device; the U-Net in its own dtype.
    add_noise=False starts from the latent as it is, already noisy at sigmas[0] (a first stage's
    leftover-noise output); stochastic samplers still draw their step noise from `noise`'s seed + 1.

    A latent with a noise mask is sampled only where the mask is 1 (soft values blend); elsewhere
    it stays the input latent, re-noised to each step's level with the starting noise (zeros when
    add_noise is False): `inpaint.MaskedDenoiser`, ComfyUI's semantics. Inpainting U-Nets also
    get their mask and masked-image channels (see `guided_model`).
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
    x = samples.to(device, torch.float32)
    start_noise = noise.generate(samples).to(device) if add_noise else torch.zeros_like(x)
    x_start = x + start_noise * sigmas[0] if add_noise else x
    mask = None
    if latent.noise_mask is not None:
        from latentgraph.nodes.sd.inpaint import latent_mask

        mask = latent_mask(latent.noise_mask, samples.shape).to(device)
    total = sigmas.numel() - 1

    def callback(info: dict) -> None:
        if on_step is not None:
            on_step(info["i"] + 1, total, info["denoised"])

    sample = SAMPLERS[sampler.name]
    with model.patched():  # the handle's LoRAs on the shared U-Net, held for the whole walk
        guided = guided_model(model, positive, negative, cfg, (samples.shape[-1] * 8, samples.shape[-2] * 8), latent)
        if mask is not None:
            from latentgraph.nodes.sd.inpaint import MaskedDenoiser

            guided = MaskedDenoiser(guided, x, start_noise, mask)
        result = sample(
            guided,
            x_start,
            sigmas,
            callback=callback,
            noise_sampler=default_noise_sampler(x, (noise.seed + 1) % 2**64),  # not the initial noise's stream
            **sampler.options,
        )
    return Latent(result.float().cpu(), latent.noise_mask)
