"""SDXL base and refiner through our graph against diffusers' StableDiffusionXL pipelines, on the same weights.

The tiny SDXL base and refiner checkpoints (tests/sd_tiny.py, real single-file layout) are loaded
on diffusers' side by diffusers itself: `StableDiffusionXLPipeline.from_single_file(path, config=...)`
and `StableDiffusionXLImg2ImgPipeline.from_single_file(path, config=...)`, where `config` is a local
diffusers folder this module writes with tests/diffusers_tiny.py (model_index.json, unet/, vae/,
text_encoder/ as CLIPTextModel, text_encoder_2/ as CLIPTextModelWithProjection, tokenizer/ and
tokenizer_2/ saved from our tokenizer, tokenizer_2 padding with "!" = token 0, scheduler/).
Nothing comes from the hub.

What from_single_file does with these files (diffusers 0.42):

* Without `config` it would guess the family from the keys and take SD1.5 for both files
  (`infer_diffusers_model_type` looks for bigG's block 9, `resblocks.9`, which a 3-layer tower does not
  have) and try to fetch "stable-diffusion-v1-5" configs from the hub. With a local `config` folder
  every component's architecture comes from there and only the weights from the file, so it works
  offline. No fallback to the converter functions was needed.
* Without `accelerate` (not installed here) it loads the converted weights with
  `load_state_dict(strict=False)`: a key it failed to convert would leave random weights behind
  silently. So the first test checks every tensor of every component against diffusers' own
  converters (`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
  `convert_open_clip_checkpoint`).
* The pipelines' invisible watermark is turned off (`add_watermarker=False`): it would change the images.

Starting point and schedulers are mapped as in test_sd_pipeline.py (whose helpers and tolerances
this module imports): our initial noise times our sigmas[0] is handed over as `latents=` divided by
the scheduler's init_noise_sigma (k-diffusion-form schedulers) or by sqrt(1 + sigma^2) (VP-form:
DDIM, DPM-Solver); DPM-Solver with Karras sigmas is the UnroundedKarrasDPMSolver (diffusers rounds
the U-Net's timesteps; see test_sd_pipeline). The final latents are captured from the pipeline's
last step callback and the images are its output_type="np", both from the same call.

SDXL specifics checked here:

* Conditioning: context = CLIP-L and bigG penultimate hidden states (no final norm), pooled = bigG's
  projected end token; diffusers' `encode_prompt` for the prompt and an explicit negative_prompt=""
  (encoded as text), and its zeroed negative (negative_prompt=None with force_zeros_for_empty_prompt)
  against our conditioning_zero_out. The refiner: bigG alone.
* Micro-conditioning: our y (base_vector / refiner_vector) is compared with the input of diffusers'
  `unet.add_embedding` captured during the pipeline run, and the U-Net with both against
  UNet2DConditionModel's added_cond_kwargs. diffusers takes (height, width) tuples and crops as
  (top, left); the size node takes widths and heights by name. The images are 128 wide, 96 high,
  so a width/height swap anywhere shows. The negative prompt has no size node in the workflow, so
  it uses the image size and no crop: diffusers gets the same through negative_original_size,
  negative_crops_coords_top_left and negative_target_size (left out, it would reuse the positive's).
* Base -> refiner: diffusers splits by timestep value (denoising_end / denoising_start = f: the
  base keeps the timesteps >= round(1000 (1 - f)), the refiner takes those below, and adds no
  noise when denoising_start is given; `strength` is then ignored). We split by step index
  (ksampler_advanced end_step / start_step). For the "normal" (diffusers "linspace") schedule the
  two agree where the step count says so (10 steps, f = 0.8: step 8; the shipped workflow's 25
  steps, f = 0.8: step 20). With Karras sigmas the timesteps crowd at low noise and diffusers hands
  over much earlier (25 steps, f = 0.8: after 16 steps, not 20; 10 steps: 6, not 8); see
  test_denoising_end_counts_timesteps_not_steps.
* v-prediction with zero terminal SNR (files marked `v_pred` + `ztsnr`) against diffusers'
  EulerDiscreteScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, linspace).

Observed (one thread, float32), max |ours - diffusers|; latents relative to max |latent| (41-141):

    text conditioning       base context/pooled 3.4e-7 x max; refiner 2.6e-7
    y (U-Net add_embedding input, captured in every run below)          2.6e-7 x max|y|
    U-Net with text_embeds + time_ids, base and refiner                 0 (bitwise: same ops, one thread)
    euler / normal                 128x96    latents 3.1e-6    images 4.2e-6
    dpmpp_2m / karras (unrounded)  128x96    latents 4.9e-6    images 7.9e-6
    ddim / ddim_uniform            128x96    latents 2.2e-6    images 4.0e-6
    euler, zeroed negative         128x96    latents 1.5e-6    images 3.3e-6
    euler base 8 + refiner 2 of 10           latents 2.6e-6    images 4.3e-6   (hand-off latent 2.6e-6)
    dpmpp_2m karras base 6 + refiner 4 of 10 latents 4.4e-6    images 6.4e-6   (hand-off latent 3.8e-6)
    v-prediction, zero terminal SNR, euler   latents 1.0e-5    images 2.0e-5   (sigma_max 4096)

Tolerances are test_sd_pipeline's: LATENT_RTOL = 1e-4 of max |latent|, IMAGE_ATOL = 1e-4; text
conditioning and y 1e-4 of their largest magnitude. The mutations are far outside them: pooled
vector zeroed 0.13 x max|latent| (images 0.21), clip_skip 1 0.88 (images 1.0), width/height swapped
0.26 (0.38), crop dropped 0.20 (0.26), the v-prediction file run as epsilon 3e3 (0.84).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub; set before diffusers is imported

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SDXL_NAME, SDXL_REFINER_NAME
from diffusers_tiny import (
    clip_text_config,
    scheduler_config,
    unet_config,
    vae_config,
    write_pipeline_folder,
)
from latentgraph.nodes.sd import schedules
from latentgraph.nodes.sd.checkpoint import load_checkpoint
from latentgraph.nodes.sd.families import SDXL, SDXL_REFINER, sdxl
from latentgraph.nodes.sd.handles import ConditioningEntry
from latentgraph.nodes.sd.prompt import encode_text, tokenize_prompt
from latentgraph.nodes.sd.samplers import initial_noise
from latentgraph.nodes.sd.schedules import sigmas_for
from safetensors.torch import load_file
from sd_tiny import (
    TINY_CLIP_G,
    TINY_CLIP_L,
    TINY_REFINER_UNET,
    TINY_SDXL_UNET,
    TINY_VAE,
    write_tiny_sdxl_checkpoint,
)
from test_sd_pipeline import (
    LATENT_RTOL,
    SD1_CONFIG,
    Ours,
    Result,
    UnroundedKarrasDPMSolver,
    assert_match,
    assert_mismatch,
    ddim,
    dpmpp_2m_karras,
    euler,
    one_thread,  # noqa: F401  (the module-scoped autouse fixture: run single-threaded)
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
        infer_diffusers_model_type,
    )
    from diffusers.schedulers import EulerDiscreteScheduler

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on a blue background, top left"
NEGATIVE = "blurry, low quality, watermark"
CFG = 7.5
SEED = 1234
STEPS = 10
WIDTH, HEIGHT = 128, 96  # not square: a width/height swap anywhere changes the result
# The size node on the positive prompt: none of these is the image's own.
ORIGINAL = {"original_width": 96, "original_height": 80}
CROP = {"crop_left": 16, "crop_top": 8}
TARGET = {"target_width": 160, "target_height": 144}
# The same in diffusers' terms: (height, width) and (top, left).
SIZE_KWARGS = {
    "original_size": (80, 96), "crops_coords_top_left": (8, 16), "target_size": (144, 160),
    # The negative prompt has no size node: the image's size and no crop (diffusers would give it
    # the positive prompt's numbers if these were left out).
    "negative_original_size": (HEIGHT, WIDTH), "negative_crops_coords_top_left": (0, 0),
    "negative_target_size": (HEIGHT, WIDTH),
}
TEXT_RTOL = 1e-4  # of max |reference|


# ---------------------------------------------------------------------------------------------
# diffusers' side: local configs, from_single_file


def write_diffusers_config(folder: Path, refiner: bool) -> Path:
    """A diffusers pipeline folder without weights describing the tiny base or refiner
    (tests/diffusers_tiny.py), with what is SDXL's: the text_time added conditioning, SDXL's latent
    scaling, CLIPTextModelWithProjection for bigG, tokenizer_2 padding with "!" (token 0) and the
    model_index flags of the real base (force_zeros_for_empty_prompt) and refiner
    (requires_aesthetics_score, no first text encoder)."""
    unet = TINY_REFINER_UNET if refiner else TINY_SDXL_UNET
    components = {
        "unet": ("diffusers", "UNet2DConditionModel", unet_config(
            unet, sample_size=16, addition_embed_type="text_time", addition_time_embed_dim=sdxl.SIZE_EMBEDDING,
            projection_class_embeddings_input_dim=unet.adm_in_channels)),
        # SDXL's scaling (TINY_VAE carries SD1.x's); float32 throughout, so no fp16 upcast either way.
        "vae": ("diffusers", "AutoencoderKL", vae_config(TINY_VAE, scaling_factor=0.13025, force_upcast=False)),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection",
                           clip_text_config(TINY_CLIP_G, architecture="CLIPTextModelWithProjection")),
        # Replaced by every test: SD's training schedule, the sampler chosen per test.
        "scheduler": ("diffusers", "EulerDiscreteScheduler", scheduler_config("EulerDiscreteScheduler")),
    }
    if refiner:
        return write_pipeline_folder(folder, "StableDiffusionXLImg2ImgPipeline", components, {"tokenizer_2": "!"},
                                     text_encoder=[None, None], tokenizer=[None, None],
                                     requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    components["text_encoder"] = ("transformers", "CLIPTextModel", clip_text_config(TINY_CLIP_L))
    return write_pipeline_folder(folder, "StableDiffusionXLPipeline", components,
                                 {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}, force_zeros_for_empty_prompt=True)


def from_single_file(pipeline_class, path: Path, config: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True,
                                               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def base_pipe(family_checkpoints, tmp_path_factory) -> StableDiffusionXLPipeline:
    config = write_diffusers_config(tmp_path_factory.mktemp("sdxl-base-config"), refiner=False)
    return from_single_file(StableDiffusionXLPipeline, family_checkpoints[SDXL_NAME], config)


@pytest.fixture(scope="module")
def refiner_pipe(family_checkpoints, tmp_path_factory) -> StableDiffusionXLImg2ImgPipeline:
    config = write_diffusers_config(tmp_path_factory.mktemp("sdxl-refiner-config"), refiner=True)
    return from_single_file(StableDiffusionXLImg2ImgPipeline, family_checkpoints[SDXL_REFINER_NAME], config)


@pytest.fixture(scope="module")
def ours(family_checkpoints) -> dict:
    """Our loaded base and refiner (load_checkpoint, as the loader node does). Do not modify."""
    return {"base": load_checkpoint(family_checkpoints[SDXL_NAME]),
            "refiner": load_checkpoint(family_checkpoints[SDXL_REFINER_NAME])}


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return ((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max()).item()


# ---------------------------------------------------------------------------------------------
# Loading


def assert_every_tensor_loaded(model: torch.nn.Module, converted: dict[str, torch.Tensor], label: str) -> None:
    """Every tensor of the model equals diffusers' conversion of the file: none was left at its
    initial value by from_single_file's non-strict load."""
    state = model.state_dict()
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
    buffers = {name for name, _ in model.named_buffers()}
    assert set(state) - buffers <= set(converted), f"{label}: not in the file: {sorted(set(state) - buffers - set(converted))}"
    for key, value in state.items():
        if key in converted:
            assert torch.equal(value, converted[key].to(value.dtype)), f"{label}: {key} differs from the file"


def test_from_single_file_builds_both_pipelines_from_the_files_with_local_configs(base_pipe, refiner_pipe,
                                                                                   family_checkpoints):
    base = load_file(family_checkpoints[SDXL_NAME])
    refiner = load_file(family_checkpoints[SDXL_REFINER_NAME])
    # Why `config=` is needed: diffusers' key-based guess takes the tiny files for SD1.5 (it looks
    # for bigG's 10th block, which a 3-layer tower does not have).
    assert infer_diffusers_model_type(base) == infer_diffusers_model_type(refiner) == "v1"

    assert_every_tensor_loaded(base_pipe.unet, convert_ldm_unet_checkpoint(base, dict(base_pipe.unet.config)), "unet")
    assert_every_tensor_loaded(base_pipe.vae, convert_ldm_vae_checkpoint(base, dict(base_pipe.vae.config)), "vae")
    assert_every_tensor_loaded(base_pipe.text_encoder, convert_ldm_clip_checkpoint(base), "text_encoder")
    assert_every_tensor_loaded(base_pipe.text_encoder_2, convert_open_clip_checkpoint(
        base_pipe.text_encoder_2, base, prefix="conditioner.embedders.1.model."), "text_encoder_2")
    assert_every_tensor_loaded(refiner_pipe.unet, convert_ldm_unet_checkpoint(refiner, dict(refiner_pipe.unet.config)),
                               "refiner unet")
    assert_every_tensor_loaded(refiner_pipe.text_encoder_2, convert_open_clip_checkpoint(
        refiner_pipe.text_encoder_2, refiner, prefix="conditioner.embedders.0.model."), "refiner text_encoder_2")
    assert refiner_pipe.text_encoder is None and refiner_pipe.tokenizer is None

    # The refiner file's VAE is the base's (same seed in sd_tiny), so the refiner pipeline's images
    # (its own VAE) compare with our workflow's (decoded by the base's VAE).
    assert_every_tensor_loaded(refiner_pipe.vae, convert_ldm_vae_checkpoint(base, dict(refiner_pipe.vae.config)),
                               "refiner vae = base vae")

    # Latent scaling: SDXL's on both sides; no fp16 upcast games.
    assert base_pipe.vae.config.scaling_factor == refiner_pipe.vae.config.scaling_factor == 0.13025
    assert SDXL.latent.scaling_factor == SDXL_REFINER.latent.scaling_factor == 0.13025
    assert not base_pipe.vae.config.force_upcast
    assert base_pipe.config.force_zeros_for_empty_prompt and refiner_pipe.config.requires_aesthetics_score

    # The tokenizers saved from ours tokenize as ours: CLIP-L pads with the end token, bigG with 0 ("!").
    for tokenizer, pad_id in ((base_pipe.tokenizer, 49407), (base_pipe.tokenizer_2, 0), (refiner_pipe.tokenizer_2, 0)):
        assert tokenizer.pad_token_id == pad_id
        ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        assert torch.equal(ids, tokenize_prompt(PROMPT, pad_id=pad_id).ids)


# ---------------------------------------------------------------------------------------------
# Text encoders, y, U-Net


def diffusers_encode(pipe, negative: str | None):
    with torch.no_grad():
        return pipe.encode_prompt(PROMPT, device=torch.device("cpu"), num_images_per_prompt=1,
                                  do_classifier_free_guidance=True, negative_prompt=negative)


def test_text_conditioning_equals_diffusers_encode_prompt(ours, base_pipe, refiner_pipe):
    base, refiner = ours["base"], ours["refiner"]
    worst = 0.0
    for negative in (NEGATIVE, ""):  # "" given explicitly: encoded as the empty text, not zeroed
        context, negative_context, pooled, negative_pooled = diffusers_encode(base_pipe, negative)
        for text, (their_context, their_pooled) in ((PROMPT, (context, pooled)), (negative, (negative_context, negative_pooled))):
            our_context, our_pooled = encode_text(base.text_encoders, SDXL, text)
            assert our_context.shape == (1, 77, 64 + 128) and our_pooled.shape == (1, 128)
            worst = max(worst, relative_error(our_context, their_context), relative_error(our_pooled, their_pooled))
            # Both halves of the context carry information: neither encoder is silently dropped.
            assert their_context[..., :64].abs().max() > 0.1 and their_context[..., 64:].abs().max() > 0.1
    print(f"base text conditioning: max error {worst:.3g} x max|reference|")
    assert worst <= TEXT_RTOL

    # The refiner: bigG alone, context and pooled.
    context, negative_context, pooled, negative_pooled = diffusers_encode(refiner_pipe, NEGATIVE)
    refiner_worst = 0.0
    for text, their_context, their_pooled in ((PROMPT, context, pooled), (NEGATIVE, negative_context, negative_pooled)):
        our_context, our_pooled = encode_text(refiner.text_encoders, SDXL_REFINER, text)
        assert our_context.shape == (1, 77, 128)
        refiner_worst = max(refiner_worst, relative_error(our_context, their_context), relative_error(our_pooled, their_pooled))
    print(f"refiner text conditioning: max error {refiner_worst:.3g} x max|reference|")
    assert refiner_worst <= TEXT_RTOL

    # Mutation: the last layer instead of the penultimate one (clip_skip=1) is far off.
    context, _, pooled, _ = diffusers_encode(base_pipe, NEGATIVE)
    wrong_layer, wrong_pooled = encode_text(base.text_encoders, SDXL, PROMPT, clip_skip=1)
    assert relative_error(wrong_layer, context) > 100 * TEXT_RTOL
    assert relative_error(wrong_pooled, pooled) <= TEXT_RTOL  # the pooled vector does not depend on the layer


def test_conditioning_zero_out_is_diffusers_zeroed_negative_prompt(family_executor, base_pipe):
    # negative_prompt=None with force_zeros_for_empty_prompt: zeros of the prompt's shapes.
    _, negative_context, _, negative_pooled = diffusers_encode(base_pipe, None)
    assert not negative_context.any() and not negative_pooled.any()
    document = shipped("sdxl_txt2img.json")
    document["nodes"]["zero"] = {"type": "conditioning_zero_out", "inputs": {"conditioning": link("positive")}}
    values = run_graph(family_executor, document, ["positive", "zero"])
    entry = values["zero"]["conditioning"].entries[0]
    assert entry.embedding.shape == negative_context.shape and entry.pooled.shape == negative_pooled.shape
    assert not entry.embedding.any() and not entry.pooled.any()
    assert values["positive"]["conditioning"].entries[0].embedding.abs().max() > 0.1  # it was not zero before
    # (The whole run with this negative is a case of test_txt2img_matches_stable_diffusion_xl_pipeline.)


def add_embedding_input(unet, pooled: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """What diffusers' UNet2DConditionModel hands its add_embedding for text_embeds + time_ids."""
    with torch.no_grad():
        time_embeds = unet.add_time_proj(time_ids.flatten()).reshape(time_ids.shape[0], -1)
    return torch.cat([pooled, time_embeds], dim=-1)


@pytest.mark.parametrize("which", ["base", "refiner"])
def test_unet_with_added_conditioning_equals_diffusers(ours, base_pipe, refiner_pipe, which):
    loaded = ours[which]
    pipe = base_pipe if which == "base" else refiner_pipe
    spec = SDXL if which == "base" else SDXL_REFINER
    generator = torch.Generator().manual_seed(5)
    context = torch.randn(2, 77, loaded.unet.config.context_dim, generator=generator)
    pooled = torch.randn(2, 128, generator=generator)
    x = torch.randn(2, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    timesteps = torch.tensor([999.0, 123.4])
    if which == "base":
        extras = [{**ORIGINAL, **CROP, **TARGET}, {}]  # the second: the image's size, no crop
        time_ids = torch.tensor([[80, 96, 8, 16, 144, 160], [HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH]], dtype=torch.float32)
    else:
        extras = [{**ORIGINAL, **CROP, "aesthetic_score": 6.0}, {}]  # the second: defaults, 2.5 for a negative
        time_ids = torch.tensor([[80, 96, 8, 16, 6.0], [HEIGHT, WIDTH, 0, 0, 2.5]])
    sides = ["positive", "negative"]
    y = torch.cat([spec.vector(ConditioningEntry(context[i:i + 1], pooled[i:i + 1], extra=extras[i]), sides[i],
                               (WIDTH, HEIGHT)) for i in range(2)])
    their_y = add_embedding_input(pipe.unet, pooled, time_ids)
    y_error = (y - their_y).abs().max().item()
    with torch.no_grad():
        out = loaded.unet(x, timesteps, context, y)
        theirs = pipe.unet(x, timesteps, encoder_hidden_states=context,
                           added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        # Mutations the comparison sees: pooled zeroed; width and height swapped.
        zero_pooled = loaded.unet(x, timesteps, context, torch.cat([torch.zeros_like(pooled), y[:, 128:]], dim=1))
        swapped = time_ids.clone()
        swapped[:, [0, 1]] = swapped[:, [1, 0]]
        swapped_y = add_embedding_input(pipe.unet, pooled, swapped)
        wrong_size = loaded.unet(x, timesteps, context, swapped_y)
    error = relative_error(out, theirs)
    print(f"{which}: y max abs error {y_error:.3g}; U-Net output {error:.3g} x max|output|")
    assert y.shape == (2, loaded.unet.config.adm_in_channels)
    assert y_error <= 1e-5  # sinusoids of numbers up to 999 in float32, computed in another order
    assert error <= LATENT_RTOL
    assert relative_error(zero_pooled, theirs) > 100 * LATENT_RTOL
    assert relative_error(wrong_size, theirs) > 100 * LATENT_RTOL


# ---------------------------------------------------------------------------------------------
# Whole runs


def link(node: str, output: str = "conditioning") -> dict:
    return {"node": node, "output": output}


def shipped(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


def run_graph(executor, document: dict, outputs: list[str]) -> dict:
    result = executor.run(document, outputs=outputs)
    assert result.status == "succeeded", result.errors
    return result.values


@dataclass(frozen=True)
class Case:
    sampler: str
    schedule: str
    make_scheduler: Callable[[], object]
    vp: bool = False  # the diffusers scheduler works on x / sqrt(1 + sigma^2)
    zero_negative: bool = False  # negative = conditioning_zero_out(prompt) / diffusers negative_prompt=None


CASES = {
    "euler-normal": Case("euler", "normal", euler),
    "dpmpp_2m-karras": Case("dpmpp_2m", "karras", lambda: dpmpp_2m_karras(UnroundedKarrasDPMSolver), vp=True),
    "ddim-ddim_uniform": Case("ddim", "ddim_uniform", ddim, vp=True),
    "euler-normal-zeroed-negative": Case("euler", "normal", euler, zero_negative=True),
}


def txt2img_document(case: Case, clip_skip: int = 0, size: dict | None = None) -> dict:
    """workflows/sdxl_txt2img.json at WIDTH x HEIGHT with the module's prompt, sampler and size node."""
    document = shipped("sdxl_txt2img.json")
    nodes = document["nodes"]
    nodes["latent"]["inputs"].update(width=WIDTH, height=HEIGHT, batch_size=1)
    nodes["positive"]["inputs"].update(text=PROMPT, clip_skip=clip_skip)
    nodes["negative"]["inputs"].update(text=NEGATIVE, clip_skip=clip_skip)
    nodes["sampler"]["inputs"].update(seed=SEED, steps=STEPS, cfg=CFG, sampler=case.sampler, scheduler=case.schedule,
                                      denoise=1.0)
    nodes["size"]["inputs"].update(size if size is not None else {**ORIGINAL, **CROP, **TARGET})
    if case.zero_negative:
        nodes["zero"] = {"type": "conditioning_zero_out", "inputs": {"conditioning": link("positive")}}
        nodes["sampler"]["inputs"]["negative"] = link("zero")
    return document


def run_ours(executor, document: dict, case: Case, model_node: str = "checkpoint", latent_node: str = "sampler",
             extra_outputs: tuple[str, ...] = ()) -> tuple[Ours, dict]:
    """Run our graph; the result with our starting point (initial_noise(seed) at sigmas[0])."""
    values = run_graph(executor, document, [model_node, latent_node, "decode", *extra_outputs])
    sigmas = sigmas_for(case.schedule, values[model_node]["model"].schedule, STEPS)
    noise = initial_noise((1, 4, HEIGHT // 8, WIDTH // 8), SEED)
    return Ours(values[latent_node]["latent"].samples, values["decode"]["image"], noise, sigmas[0].item()), values


def starting_latents(case: Case, ours: Ours) -> torch.Tensor:
    """Our starting point x = noise * sigmas[0] as the pipeline's `latents=` (see test_sd_pipeline)."""
    probe = case.make_scheduler()
    probe.set_timesteps(STEPS)  # init_noise_sigma depends on the timesteps
    sigma_0 = torch.tensor(ours.sigma_0, dtype=torch.float64)
    if case.vp:
        assert probe.init_noise_sigma == 1.0
        return (ours.noise.double() * sigma_0 / (1 + sigma_0**2).sqrt()).float()
    assert abs(float(probe.init_noise_sigma) / ours.sigma_0 - 1) < 1e-4
    return (ours.noise.double() * sigma_0 / float(probe.init_noise_sigma)).float()


class Capture:
    """A pipeline's latents after its last step (callback_on_step_end) and its U-Net's
    add_embedding input at the first call (a forward pre-hook)."""

    def __init__(self, unet):
        self.latents: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self._hook = unet.add_embedding.register_forward_pre_hook(self._pre_hook)

    def _pre_hook(self, module, args):
        if self.y is None:
            self.y = args[0].detach().clone()

    def __call__(self, pipe, step, timestep, kwargs):
        self.latents = kwargs["latents"].detach().clone()
        return kwargs

    def close(self) -> None:
        self._hook.remove()


def call_pipe(pipe, scheduler, output_type: str = "np", **kwargs) -> tuple[Result, torch.Tensor]:
    """Run a pipeline once: (its final latents and images, its add_embedding input [negative, positive])."""
    pipe.scheduler = scheduler
    capture = Capture(pipe.unet)
    try:
        with torch.no_grad():
            images = pipe(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=CFG, output_type=output_type,
                          callback_on_step_end=capture, **kwargs).images
    finally:
        capture.close()
    if output_type == "latent":
        assert torch.equal(images, capture.latents)
        return Result(images, None), capture.y
    return Result(capture.latents, torch.from_numpy(images)), capture.y


def run_base_pipe(base_pipe, case: Case, ours: Ours) -> tuple[Result, torch.Tensor]:
    """The base pipeline as our txt2img document: size node on the prompt, none on the negative."""
    return call_pipe(base_pipe, case.make_scheduler(), negative_prompt=None if case.zero_negative else NEGATIVE,
                     height=HEIGHT, width=WIDTH, latents=starting_latents(case, ours), **SIZE_KWARGS)


def our_y(values: dict, vector, negative_node: str) -> torch.Tensor:
    """Our y for [negative, positive], built by the family's vector as the sampler builds it."""
    entries = [(values[negative_node]["conditioning"].entries[0], "negative"),
               (values["size"]["conditioning"].entries[0], "positive")]
    return torch.cat([vector(entry, side, (WIDTH, HEIGHT)) for entry, side in entries])


@pytest.mark.parametrize("name", list(CASES))
def test_txt2img_matches_stable_diffusion_xl_pipeline(family_executor, base_pipe, name):
    case = CASES[name]
    negative_node = "zero" if case.zero_negative else "negative"
    ours, values = run_ours(family_executor, txt2img_document(case), case, extra_outputs=("size", negative_node))
    theirs, their_y = run_base_pipe(base_pipe, case, ours)
    assert_match(ours, theirs, name)
    # y: pooled text then the six numbers, for both prompts, is what diffusers' U-Net embeds.
    y = our_y(values, SDXL.vector, negative_node)
    y_error = relative_error(y, their_y)
    print(f"{name}: y {y_error:.3g} x max|y|")
    assert y_error <= TEXT_RTOL
    if case.zero_negative:  # the zeroed negative keeps its size numbers
        assert not y[0, :128].any() and y[0, 128:].abs().max() > 0.5


def test_mutations_break_the_match(family_executor, euler_reference, monkeypatch):
    """Each of these mistakes moves the result far outside the tolerances."""
    case = CASES["euler-normal"]

    # The pooled vector missing from y (zeros, the context kept). Run first: the executor caches
    # outputs by their inputs, and this document is the unmutated one.
    embed = sdxl._embed
    monkeypatch.setattr(sdxl, "_embed", lambda values, pooled: embed(values, torch.zeros_like(pooled)))
    no_pooled, _ = run_ours(family_executor, txt2img_document(case), case)
    monkeypatch.undo()
    assert_mismatch(no_pooled, euler_reference, "pooled vector zeroed")

    # The last CLIP layer instead of the penultimate one on both prompts.
    assert_mismatch(run_ours(family_executor, txt2img_document(case, clip_skip=1), case)[0], euler_reference,
                    "clip_skip 1")
    # Width and height swapped in every size number (and the crop's left and top).
    swapped = {"original_width": 80, "original_height": 96, "crop_left": 8, "crop_top": 16,
               "target_width": 144, "target_height": 160}
    assert_mismatch(run_ours(family_executor, txt2img_document(case, size=swapped), case)[0], euler_reference,
                    "width/height swapped")
    # The crop dropped.
    no_crop = {**ORIGINAL, "crop_left": 0, "crop_top": 0, **TARGET}
    assert_mismatch(run_ours(family_executor, txt2img_document(case, size=no_crop), case)[0], euler_reference,
                    "crop dropped")


@pytest.fixture(scope="module")
def euler_reference(base_pipe) -> Result:
    """diffusers' euler-normal result, for the mutation tests. Its starting latents come from the
    seed and SD's training schedule alone, so no graph run is needed for them."""
    case = CASES["euler-normal"]
    schedule = schedules.scaled_linear_noise_schedule(0.00085, 0.012, 1000)
    start = Ours(None, None, initial_noise((1, 4, HEIGHT // 8, WIDTH // 8), SEED), sigmas_for("normal", schedule, STEPS)[0].item())
    return run_base_pipe(base_pipe, case, start)[0]


# ---------------------------------------------------------------------------------------------
# Base -> refiner


HAND_OFF_STEP = 8  # of STEPS = 10
DENOISING_SPLIT = 0.8  # diffusers' denoising_end / denoising_start for the same split (see below)


def diffusers_split(make_scheduler: Callable[[], object], steps: int, fraction: float) -> tuple[int, int]:
    """(steps the base takes with denoising_end=fraction, steps the refiner takes with
    denoising_start=fraction), computed as StableDiffusionXL(Img2Img)Pipeline do (first-order schedulers)."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    cutoff = round(scheduler.config.num_train_timesteps * (1 - fraction))
    base = len([t for t in scheduler.timesteps if t >= cutoff])
    refiner = int((scheduler.timesteps < cutoff).sum())
    return base, refiner


def test_denoising_end_counts_timesteps_not_steps():
    # With the "normal" (linspace) schedule, diffusers' split by timestep value lands on our step index.
    assert diffusers_split(euler, STEPS, DENOISING_SPLIT) == (HAND_OFF_STEP, STEPS - HAND_OFF_STEP)
    # ... also for the shipped workflow: 25 euler/normal steps, the base to step 20, is denoising_end 0.8.
    workflow = shipped("sdxl_base_refiner.json")["nodes"]
    base, refiner = workflow["base_sampler"]["inputs"], workflow["refiner_sampler"]["inputs"]
    assert (base["sampler"], base["scheduler"], base["steps"], base["end_step"]) == ("euler", "normal", 25, 20)
    assert (refiner["start_step"], refiner["add_noise"]) == (20, False)
    assert diffusers_split(euler, 25, 20 / 25) == (20, 5)
    # But not everywhere: round(f * steps) is not diffusers' count in general (25 steps, f = 0.7: 17, not 18).
    assert diffusers_split(euler, 25, 0.7) == (17, 8) and round(0.7 * 25) == 18

    # Karras sigmas crowd the timesteps at low noise: diffusers hands over far earlier than the
    # step fraction says. To reproduce diffusers' denoising_end=0.8 there, end the base at step 6
    # of 10 (16 of 25), not 8 (20).
    for make_scheduler in (dpmpp_2m_karras, lambda: EulerDiscreteScheduler(**SD1_CONFIG, use_karras_sigmas=True)):
        assert diffusers_split(make_scheduler, 10, 0.8) == (6, 4)
        assert diffusers_split(make_scheduler, 25, 0.8) == (16, 9)


# (case, the step our base stops at): where diffusers' denoising_end = 0.8 hands over for that schedule.
HAND_OFFS = {"euler-normal": HAND_OFF_STEP, "dpmpp_2m-karras": 6}


@pytest.mark.parametrize("name", list(HAND_OFFS))
def test_base_to_refiner_hand_off_matches_denoising_end_and_start(family_executor, base_pipe, refiner_pipe, name):
    case, end_step = CASES[name], HAND_OFFS[name]
    assert diffusers_split(case.make_scheduler, STEPS, DENOISING_SPLIT) == (end_step, STEPS - end_step)
    document = shipped("sdxl_base_refiner.json")
    nodes = document["nodes"]
    nodes["latent"]["inputs"].update(width=WIDTH, height=HEIGHT, batch_size=1)
    for node in ("positive", "refiner_positive"):
        nodes[node]["inputs"]["text"] = PROMPT
    for node in ("negative", "refiner_negative"):
        nodes[node]["inputs"]["text"] = NEGATIVE
    common = {"seed": SEED, "steps": STEPS, "cfg": CFG, "sampler": case.sampler, "scheduler": case.schedule}
    nodes["base_sampler"]["inputs"].update(common, start_step=0, end_step=end_step)
    nodes["refiner_sampler"]["inputs"].update(common, start_step=end_step)
    ours, values = run_ours(family_executor, document, case, model_node="base", latent_node="refiner_sampler",
                            extra_outputs=("base_sampler", "refiner", "refiner_score", "refiner_negative_score"))
    refiner = values["refiner"]["model"]
    assert (refiner.family, ours.latent.shape) == ("sdxl_refiner", (1, 4, HEIGHT // 8, WIDTH // 8))

    # diffusers: the base to denoising_end, its latents (still noisy) to the refiner from
    # denoising_start, which adds no noise and ignores `strength`. Neither sets a size, so both use
    # the image's; the refiner's aesthetic scores are 6 and 2.5.
    handed_over, _ = call_pipe(base_pipe, case.make_scheduler(), output_type="latent", negative_prompt=NEGATIVE,
                               height=HEIGHT, width=WIDTH, latents=starting_latents(case, ours),
                               denoising_end=DENOISING_SPLIT)
    theirs, their_y = call_pipe(refiner_pipe, case.make_scheduler(), image=handed_over.latent,
                                negative_prompt=NEGATIVE, denoising_start=DENOISING_SPLIT, aesthetic_score=6.0,
                                negative_aesthetic_score=2.5)
    # The noisy latent handed over, at sigma = our sigmas[end_step] (VP-form schedulers hold x / sqrt(1 + sigma^2)).
    sigma = sigmas_for(case.schedule, refiner.schedule, STEPS)[end_step].double()
    their_base_latent = handed_over.latent.double() * ((1 + sigma**2).sqrt() if case.vp else 1)
    base_latent = values["base_sampler"]["latent"].samples
    base_error = relative_error(base_latent, their_base_latent)
    print(f"{name}: hand-off latent after {end_step} of {STEPS} steps (sigma {sigma:.3g}): {base_error:.3g} x max|latent|")
    assert base_error <= LATENT_RTOL
    assert_match(ours, theirs, f"{name} base + refiner")

    # The refiner's y: pooled bigG, the image size, no crop, the aesthetic score per side.
    entries = [(values["refiner_negative_score"]["conditioning"].entries[0], "negative"),
               (values["refiner_score"]["conditioning"].entries[0], "positive")]
    y = torch.cat([SDXL_REFINER.vector(entry, side, (WIDTH, HEIGHT)) for entry, side in entries])
    assert relative_error(y, their_y) <= TEXT_RTOL

    # The hand-off is not trivial: the refiner's steps change the base's latent far beyond the tolerance.
    assert relative_error(base_latent, ours.latent) > 100 * LATENT_RTOL


# ---------------------------------------------------------------------------------------------
# v-prediction with zero terminal SNR


def vpred_euler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(**SD1_CONFIG, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                  timestep_spacing="linspace")


def test_v_prediction_zero_terminal_snr_file_matches_diffusers(tmp_path, family_executor, family_checkpoints, base_pipe):
    # The base's weights (same seed) with the two marker keys v-prediction fine-tunes carry, put
    # where family_executor looks (its checkpoints folder is under this test's tmp_path).
    name = "tiny-xl-vpred-ztsnr.safetensors"
    path = write_tiny_sdxl_checkpoint(tmp_path / "models" / "checkpoints" / name, markers=("v_pred", "ztsnr"))
    marked, base = load_file(path), load_file(family_checkpoints[SDXL_NAME])
    assert set(marked) - set(base) == {"v_pred", "ztsnr"}
    assert all(torch.equal(marked[key], value) for key, value in base.items())  # so base_pipe has its weights

    family = load_checkpoint(path).family
    assert (family.prediction_type, family.prediction_source, family.zero_terminal_snr) == (
        "v_prediction", "the file's v_pred key", True)

    case = Case("euler", "normal", vpred_euler)
    document = txt2img_document(case)
    document["nodes"]["checkpoint"]["inputs"]["checkpoint"] = name
    ours, values = run_ours(family_executor, document, case)
    model = values["checkpoint"]["model"]
    assert model.prediction_type == "v_prediction"
    # The loader rescaled the schedule: the last training timestep is (almost) pure noise.
    assert abs(model.schedule.sigmas[-1].item() / (2.0**24 - 1) ** 0.5 - 1) < 1e-6
    # Our sigmas are diffusers' rescaled ones (which it computes from float32 betas).
    probe = vpred_euler()
    probe.set_timesteps(STEPS)
    assert relative_error(sigmas_for("normal", model.schedule, STEPS), probe.sigmas) < 1e-5

    theirs, _ = run_base_pipe(base_pipe, case, ours)
    assert_match(ours, theirs, "v-prediction, zero terminal SNR")
    # The comparison sees the schedule: epsilon prediction on the same file is far off.
    document["nodes"]["checkpoint"]["inputs"]["prediction"] = "epsilon"
    assert_mismatch(run_ours(family_executor, document, case)[0], theirs, "v-pred file run as epsilon")
