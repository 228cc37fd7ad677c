"""Stable Diffusion 2.x against diffusers on the same weights: text encoder, U-Net, whole txt2img.

Our side loads the tiny SD2.x checkpoints of conftest.family_checkpoints (tests/sd_tiny.py: real
LDM single-file layout, OpenCLIP ViT-H text tower in open_clip's layout) with our loader and runs
the shipped workflows/sd2_txt2img.json through the executor. diffusers' side is built by
diffusers' OWN single-file loader from the same files:

    StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True)

where `folder` (tests/diffusers_tiny.py) holds tiny diffusers configs written from the same config
objects the checkpoints were built from: model_index.json, unet/config.json (upcast_attention and
use_linear_projection true, as the real SD2 configs), vae/config.json, text_encoder/config.json,
tokenizer/ (our CLIP tokenizer saved with pad_token "!", as SD2's tokenizer has) and
scheduler/scheduler_config.json. Nothing comes from the hub (HF_HUB_OFFLINE=1); the pipeline
class is named explicitly, so diffusers' guess of the model type from key names (which would send
it to the hub for "stabilityai/stable-diffusion-2" configs) never runs.

What diffusers 0.42 does with the OpenCLIP tower (single_file_utils.convert_open_clip_checkpoint,
called by create_diffusers_clip_model_from_ldm): it splits each resblock's packed in_proj into
q/k/v, renames the rest, transposes text_projection, and skips the keys in
SD_2_TEXT_ENCODER_KEYS_TO_IGNORE, which name resblocks.23 (ViT-H's 24th, last layer) and
text_projection. diffusers conditions SD2 on `last_hidden_state` (final layer norm applied) of a
CLIPTextModel configured with ONE LAYER FEWER than the file holds (23 for ViT-H), which is the
penultimate layer with the final norm: exactly what SD2 was trained on. The tiny file has 3
resblocks, so text_encoder/config.json says num_hidden_layers=2. The ignore list is hard-wired to
resblocks.23, so here the converter also emits resblocks.2 and text_projection; without
accelerate installed (as here) diffusers loads the text encoder with load_state_dict(strict=False),
which drops those keys silently, and would also silently leave missing weights random. So the
first test checks every loaded weight against the file, for all three components.

Starting noise, scheduler equivalence, tolerances and the reused helpers are test_sd_pipeline's
(see its docstring): LATENT_RTOL = 1e-4 of max |latent|, IMAGE_ATOL = 1e-4 on [0, 1] pixels.
v-prediction runs give diffusers' scheduler prediction_type="v_prediction". Runs are 64x64
(an 8x8 latent, at which the tiny U-Net attends at 8x8 and 4x4) with 10 steps, cfg 7.5 and a
negative prompt. Observed (one thread, x86 CPU), max |ours - diffusers| (printed with -s):

    prompt embeddings (short, empty, first window of a 128-token prompt)   0 (bit for bit)
    U-Net forward, both files, 16x16 latents, t = 981 and 421.5            0 (bit for bit)
    txt2img                              latents (x max|latent|)         images
    768-v   euler / normal               1.5e-5 (2.4e-6)                 3.1e-6
    768-v   dpmpp_2m / karras            2.1e-4 (3.0e-5)                 4.5e-5   (see below)
    768-v   ddim / ddim_uniform          1.4e-5 (2.3e-6)                 4.7e-6
    512     euler / normal               1.7e-4 (2.4e-6)                 4.1e-6
    512     dpmpp_2m / karras            2.1e-4 (3.1e-6)                 5.0e-6
    512     ddim / ddim_uniform          8.2e-5 (2.0e-6)                 3.6e-6

The v model on Karras sigmas is the one outlier (3.3x and 2.2x inside the tolerances): diffusers
computes its Karras sigmas and timesteps from a float32 alphas_cumprod (off by 1.3e-5 relative
and 1.3e-3 timesteps from ours, computed in float64), and this v model's latents, 10x smaller
than the epsilon model's, feel that more. Given our sigmas and timesteps, diffusers' solver lands
at 3.0e-6 / 5.2e-6 (test_v_karras_excess_error_is_diffusers_float32_schedule). Mutations are off
by 0.5-10 x max|latent| or of the embeddings' scale: 1000x and more above the tolerances.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers are imported

import pytest
import torch
from conftest import SD2_BASE_NAME, SD2_NAME
from diffusers_tiny import (
    clip_text_config,
    scheduler_config,
    unet_config,
    vae_config,
    write_pipeline_folder,
)
from latentgraph.nodes.sd import prompt as prompt_module
from latentgraph.nodes.sd import unet as unet_module
from latentgraph.nodes.sd.checkpoint import load_checkpoint
from latentgraph.nodes.sd.families import SD2
from latentgraph.nodes.sd.prompt import encode_text
from latentgraph.nodes.sd.samplers import initial_noise
from latentgraph.nodes.sd.schedules import sigmas_for
from latentgraph.nodes.sd.unet import CrossAttention
from safetensors.torch import load_file
from sd_tiny import TINY_OPENCLIP_H, TINY_SD2_UNET, TINY_VAE
from test_sd_pipeline import (
    IMAGE_ATOL,
    LATENT_RTOL,
    PROMPT,
    STEPS,
    Ours,
    Settings,
    UnroundedKarrasDPMSolver,
    assert_match,
    assert_mismatch,
    ddim,
    dpmpp_2m_karras,
    errors,
    euler,
    one_thread,  # noqa: F401  (the module-wide single-thread fixture, autouse)
    run_diffusers,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import (
        SD_2_TEXT_ENCODER_KEYS_TO_IGNORE,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
TEXT_PREFIX = SD2.text_encoders[0].prefix  # cond_stage_model.model.
PREDICTIONS = {SD2_NAME: "v_prediction", SD2_BASE_NAME: "epsilon"}  # what each tiny file's weights say
# Prompt embeddings, of their max |value|: observed equal bit for bit (the same transformers
# CLIPTextModel code on the same weights and ids); 1e-4 as the issue asks, far below any mutation.
TEXT_RTOL = 1e-4
LONG_PROMPT = "an old stone lighthouse standing on a high cliff above a stormy sea at dusk " * 8  # 128 tokens


# ---------------------------------------------------------------------------------------------
# diffusers' side: its own single-file loading from a local config folder


def write_sd2_config_folder(folder: Path) -> Path:
    """The diffusers config folder for the tiny SD2.x files (both: they share the architecture)."""
    return write_pipeline_folder(
        folder, "StableDiffusionPipeline",
        {
            "unet": ("diffusers", "UNet2DConditionModel", unet_config(TINY_SD2_UNET, sample_size=96)),
            "vae": ("diffusers", "AutoencoderKL", vae_config(TINY_VAE, sample_size=768, scaling_factor=0.18215)),
            # SD2 conditions on the penultimate OpenCLIP layer with the final layer norm; diffusers
            # expresses that as a CLIPTextModel with one layer fewer than the file holds (the real
            # SD2 text_encoder/config.json says 23 of ViT-H's 24), whose last_hidden_state is then
            # final_layer_norm(penultimate). The tiny file has 3 layers, so 2 here.
            "text_encoder": ("transformers", "CLIPTextModel",
                             clip_text_config(TINY_OPENCLIP_H, num_hidden_layers=TINY_OPENCLIP_H.num_layers - 1)),
            # SD2's own scheduler config; the tests swap in one per sampler.
            "scheduler": ("diffusers", "DDIMScheduler",
                          scheduler_config("DDIMScheduler", clip_sample=False, set_alpha_to_one=False)),
        },
        tokenizers={"tokenizer": "!"},  # SD2's tokenizer pads with "!" (id 0)
        safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def config_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sd2_config_folder(tmp_path_factory.mktemp("sd2-diffusers-config"))


@pytest.fixture(scope="module")
def pipelines(family_checkpoints, config_folder) -> dict[str, StableDiffusionPipeline]:
    """diffusers' pipelines, one per tiny SD2 file, by the file's name. Tests swap `scheduler`."""
    result = {}
    for name in PREDICTIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableDiffusionPipeline.from_single_file(
                str(family_checkpoints[name]), config=str(config_folder), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        result[name] = pipe
    return result


@pytest.fixture(scope="module")
def ours(family_checkpoints):
    """Our loader on each tiny SD2 file (LoadedCheckpoint), by name. Shared: do not modify."""
    return {name: load_checkpoint(family_checkpoints[name]) for name in PREDICTIONS}


def test_diffusers_single_file_loading_holds_exactly_the_files_weights(family_checkpoints, pipelines):
    # from_single_file loads with load_state_dict(strict=False) when accelerate is not installed,
    # so a key it does not convert would stay randomly initialised without an error. Every weight
    # of all three components must be the file's, by diffusers' own converters.
    for name, pipe in pipelines.items():
        state = load_file(family_checkpoints[name])
        unet = convert_ldm_unet_checkpoint(state, pipe.unet.config)
        vae = convert_ldm_vae_checkpoint(state, pipe.vae.config)
        for model, expected in ((pipe.unet, unet), (pipe.vae, vae)):
            actual = model.state_dict()
            assert set(actual) == set(expected)
            assert all(torch.equal(actual[key], expected[key]) for key in actual)

        text = convert_open_clip_checkpoint(pipe.text_encoder, state, prefix=TEXT_PREFIX)
        text = {key.removeprefix("text_model."): value for key, value in text.items()}  # transformers >= 5.6
        actual = {key: value for key, value in pipe.text_encoder.state_dict().items()
                  if not key.endswith("position_ids")}
        assert set(actual) <= set(text)
        assert all(torch.equal(actual[key], text[key]) for key in actual)
        # What the converter emits beyond the 2-layer model: exactly the file's last layer (its
        # ignore list names ViT-H's resblocks.23 and text_projection, not the tiny tower's resblocks.2).
        last = TINY_OPENCLIP_H.num_layers - 1
        assert set(text) - set(actual) == {key for key in text if key.startswith(f"encoder.layers.{last}.")} != set()
        assert all(".resblocks.23." in key or key.endswith("text_projection") for key in SD_2_TEXT_ENCODER_KEYS_TO_IGNORE)
        assert pipe.text_encoder.config.num_hidden_layers == TINY_OPENCLIP_H.num_layers - 1
        assert pipe.tokenizer.pad_token == "!" and pipe.tokenizer.pad_token_id == 0


# ---------------------------------------------------------------------------------------------
# Text encoder


def their_embeddings(pipe: StableDiffusionPipeline, text: str) -> torch.Tensor:
    with torch.no_grad():
        embeddings, _ = pipe.encode_prompt(text, torch.device("cpu"), 1, False)
    return embeddings


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.mark.parametrize("text", ["short", "empty", "long"])
def test_prompt_embeddings_equal_diffusers_encode_prompt(ours, pipelines, monkeypatch, text):
    text = {"short": PROMPT, "empty": "", "long": LONG_PROMPT}[text]
    loaded, pipe = ours[SD2_NAME], pipelines[SD2_NAME]
    seen = []  # the ids our encoder runs the text model on
    encode_tokens = prompt_module.encode_tokens
    monkeypatch.setattr(prompt_module, "encode_tokens", lambda model, ids, *a: seen.append(ids) or encode_tokens(model, ids, *a))
    embeddings, _ = encode_text(loaded.text_encoders, loaded.family.spec, text)
    theirs = their_embeddings(pipe, text)

    # Padding: [BOS] tokens [EOS] 0 0 ..., the same ids diffusers' tokenizer (pad "!") gives, up
    # to its truncation at 77; a long prompt is two 77-token windows here, the first equal to
    # diffusers' truncated one (the prompt has no comma, so no window is cut early).
    (ids,) = seen
    their_ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids[:1], their_ids)
    if text == LONG_PROMPT:
        assert ids.shape == (2, 77) and embeddings.shape == (1, 154, 64)
        assert (ids[1] == 0).sum() > 0 and ids[0, -1] == 49407  # window 1 is full; window 2 is padded with 0s
        embeddings = embeddings[:, :77]
    else:
        length = int((ids[0] == 49407).nonzero()[0, 0])
        assert ids.shape == (1, 77) and (ids[0, length + 1:] == 0).all() and length + 1 < 77
    error = relative_error(embeddings, theirs)
    print(f"{text[:20]!r}: prompt embeddings max abs {(embeddings - theirs).abs().max():.3g} "
          f"(max |value| {theirs.abs().max():.3g}, relative {error:.3g})")
    assert error <= TEXT_RTOL


MUTATIONS: dict[str, Callable] = {
    # the last layer (clip_skip=1) instead of the penultimate
    "last layer": lambda loaded, text: encode_text(loaded.text_encoders, loaded.family.spec, text, clip_skip=1),
    # padded with the end token, as SD1.x, instead of 0
    "end-token padding": lambda loaded, text: encode_text(
        loaded.text_encoders, replace(SD2, text_encoders=(replace(SD2.text_encoders[0], pad_token="end"),)), text),
    # the penultimate layer without the final layer norm
    "no final norm": lambda loaded, text: encode_text(
        loaded.text_encoders, replace(SD2, text_encoders=(replace(SD2.text_encoders[0], final_norm=False),)), text),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_prompt_embedding_mutations_break_the_match(ours, pipelines, mutation):
    loaded, pipe = ours[SD2_NAME], pipelines[SD2_NAME]
    embeddings, _ = MUTATIONS[mutation](loaded, PROMPT)
    error = relative_error(embeddings, their_embeddings(pipe, PROMPT))
    print(f"{mutation}: prompt embeddings relative error {error:.3g}")
    assert error > 1000 * TEXT_RTOL


# ---------------------------------------------------------------------------------------------
# U-Net


# Of max |output|. Observed bit-for-bit equal: both U-Nets run the same torch kernels (conv2d,
# linear, SDPA, group/layer norm) in the same order, one thread. Reordered float32 sums (other
# thread counts, other CPUs' kernels) move single results by ~1e-7 relative and a U-Net pass by
# ~1e-6 (test_sd_models.py); 1e-5 leaves 10x for that, while any layout or head-split mistake
# is off by O(1).
UNET_RTOL = 1e-5


def test_unet_forward_equals_diffusers(ours, pipelines):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 16, 16, generator=generator) * 5
    context = torch.randn(2, 77, 64, generator=generator)
    timesteps = torch.tensor([981.0, 421.5])  # a fractional one as well: samplers pass those
    for name in PREDICTIONS:
        with torch.no_grad():
            mine = ours[name].unet(x, timesteps, context)
            theirs = pipelines[name].unet(x, timesteps, encoder_hidden_states=context).sample
        error = relative_error(mine, theirs)
        print(f"{name}: U-Net max abs {(mine - theirs).abs().max():.3g} (max |out| {theirs.abs().max():.3g}, "
              f"relative {error:.3g})")
        assert error <= UNET_RTOL


def test_unet_attention_is_upcast_in_float16(ours, pipelines, monkeypatch):
    # SD2.x's attention overflows float16, so the family computes it in float32 there, as the real
    # diffusers config says with upcast_attention=True.
    assert SD2.upcast_attention and ours[SD2_NAME].family.unet.upcast_attention
    assert pipelines[SD2_NAME].unet.config.upcast_attention
    assert all(m.upcast for m in ours[SD2_NAME].unet.modules() if isinstance(m, CrossAttention))

    # One tiny attention module in float16 on the CPU: the dtype the attention kernel computes in.
    seen = []
    attention = unet_module.attention
    monkeypatch.setattr(unet_module, "attention", lambda q, k, v: seen.append(q.dtype) or attention(q, k, v))
    x = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(3))
    for upcast in (True, False):
        module = CrossAttention(64, 64, heads=1, head_channels=64, upcast=upcast)
        seen.clear()
        try:
            out = module.half()(x.half())
        except RuntimeError as error:  # float16 kernels are missing on some CPU builds
            pytest.skip(f"float16 attention is not supported on this CPU: {error}")
        assert seen == [torch.float32 if upcast else torch.float16] and out.dtype == torch.float16
        # Still the same attention: the float32 module on the same (float16-rounded) numbers.
        reference = module.float()(x.half().float())
        assert (out.float() - reference).abs().max() < 1e-2 * reference.abs().max()


# ---------------------------------------------------------------------------------------------
# Whole txt2img through our graph


def sd2_txt2img(**overrides) -> dict:
    """workflows/sd2_txt2img.json with inputs overridden ("node.input": value)."""
    document = json.loads((ROOT / "workflows" / "sd2_txt2img.json").read_text())
    for key, value in overrides.items():
        node_id, name = key.split(".")
        document["nodes"][node_id]["inputs"][name] = value
    return document


@dataclass
class OursSD2(Ours):
    prediction_type: str = ""  # what the model handle says the U-Net predicts


def run_ours(executor, checkpoint: str, settings: Settings, prediction: str = "auto", clip_skip: int = 0) -> OursSD2:
    """Our graph: the shipped SD2 workflow with `checkpoint`, the loader's `prediction` input and
    both prompts' `clip_skip` (0: the family's layer), as test_sd_pipeline.run_ours otherwise."""
    document = sd2_txt2img(**{
        "checkpoint.checkpoint": checkpoint, "checkpoint.prediction": prediction,
        "latent.width": settings.width, "latent.height": settings.height, "latent.batch_size": settings.batch,
        "positive.text": PROMPT, "negative.text": settings.negative,
        "positive.clip_skip": clip_skip, "negative.clip_skip": clip_skip,
        "sampler.seed": settings.seed, "sampler.steps": STEPS, "sampler.cfg": settings.cfg,
        "sampler.sampler": settings.sampler, "sampler.scheduler": settings.schedule, "sampler.denoise": 1.0,
    })
    result = executor.run(document, outputs=["checkpoint", "sampler", "decode"])
    assert result.status == "succeeded", result.errors
    values = result.values
    model = values["checkpoint"]["model"]
    sigmas = sigmas_for(settings.schedule, model.schedule, STEPS)
    noise = initial_noise((settings.batch, 4, settings.height // 8, settings.width // 8), settings.seed)
    return OursSD2(values["sampler"]["latent"].samples, values["decode"]["image"], noise, sigmas[0].item(),
                   model.prediction_type)


def predicting(make_scheduler: Callable[[], object], prediction_type: str) -> Callable[[], object]:
    """test_sd_pipeline's scheduler factory with the model's prediction type."""
    def make():
        scheduler = make_scheduler()
        return type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)
    return make


CASES = {
    "euler-normal": (euler, Settings("euler", "normal", height=SIZE, width=SIZE)),
    "dpmpp_2m-karras": (lambda: dpmpp_2m_karras(UnroundedKarrasDPMSolver),
                        Settings("dpmpp_2m", "karras", vp=True, height=SIZE, width=SIZE)),
    "ddim-ddim_uniform": (ddim, Settings("ddim", "ddim_uniform", vp=True, height=SIZE, width=SIZE)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("checkpoint", list(PREDICTIONS))
def test_txt2img_through_our_graph_matches_the_diffusers_pipeline(family_executor, pipelines, checkpoint, case):
    make_scheduler, settings = CASES[case]
    prediction_type = PREDICTIONS[checkpoint]
    ours = run_ours(family_executor, checkpoint, settings)
    assert ours.prediction_type == prediction_type  # told from the weights ("auto")
    theirs = run_diffusers(pipelines[checkpoint], predicting(make_scheduler, prediction_type), settings, ours)
    assert_match(ours, theirs, f"{checkpoint} {prediction_type} {case}")


# ---------------------------------------------------------------------------------------------
# Prediction type and graph-level mutations


def test_prediction_type_is_told_from_the_weights_and_the_loader_input_overrides_it(family_checkpoints):
    for name, prediction_type in PREDICTIONS.items():
        family = load_checkpoint(family_checkpoints[name]).family
        assert (family.prediction_type, family.prediction_source) == (prediction_type, "the weights")
        other = "epsilon" if prediction_type == "v_prediction" else "v_prediction"
        family = load_checkpoint(family_checkpoints[name], prediction_type=other).family
        assert (family.prediction_type, family.prediction_source) == (other, "the caller")


def test_graph_mutations_break_the_match(family_executor, pipelines):
    make_scheduler, settings = CASES["euler-normal"]
    v_pipeline = pipelines[SD2_NAME]
    reference = run_ours(family_executor, SD2_NAME, settings)
    theirs = run_diffusers(v_pipeline, predicting(make_scheduler, "v_prediction"), settings, reference)
    assert_match(reference, theirs, "v euler-normal")

    # The v file run as epsilon (the loader's prediction input overrides the weights).
    as_epsilon = run_ours(family_executor, SD2_NAME, settings, prediction="epsilon")
    assert as_epsilon.prediction_type == "epsilon"
    assert_mismatch(as_epsilon, theirs, "v file run as epsilon")
    # ... and overriding with what the weights say changes nothing.
    as_v = run_ours(family_executor, SD2_NAME, settings, prediction="v_prediction")
    assert torch.equal(as_v.latent, reference.latent)

    # The last text encoder layer (clip_skip 1) instead of the penultimate one.
    assert_mismatch(run_ours(family_executor, SD2_NAME, settings, clip_skip=1), theirs, "v euler-normal clip_skip=1")
    # clip_skip 2 is what SD2 uses anyway.
    assert_match(run_ours(family_executor, SD2_NAME, settings, clip_skip=2), theirs, "v euler-normal clip_skip=2")
    # The negative prompt matters.
    assert_mismatch(run_ours(family_executor, SD2_NAME, settings.replace(negative="")), theirs, "empty negative")


class OurKarrasDPMSolver(DPMSolverMultistepScheduler):
    """diffusers' DPM-Solver++ stepping through OUR Karras sigmas and U-Net timesteps (computed in
    float64 from the family's schedule, then float32) instead of its own (computed from a float32
    alphas_cumprod: sigmas off by up to 1.3e-5 relative, timesteps by up to 1.3e-3)."""

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        super().set_timesteps(num_inference_steps, device=device, **kwargs)
        schedule = SD2.schedule.build()
        sigmas = sigmas_for("karras", schedule, num_inference_steps)
        timesteps = schedule.sigma_to_t(sigmas[:-1])
        assert ((self.sigmas.double() - sigmas).abs() / sigmas.clamp_min(1e-3)).max() < 2e-5  # float32 rounding only
        assert (self.timesteps.double().round() == timesteps.round()).all()
        self.sigmas = sigmas.float()
        self.timesteps = timesteps.float()


def test_v_karras_excess_error_is_diffusers_float32_schedule(family_executor, pipelines):
    # Against diffusers' own Karras schedule the v model is 10x further off than the epsilon model
    # (relative to their max |latent|: 3.0e-5 vs 3.1e-6; images 4.5e-5 vs 5.0e-6; Euler with
    # Karras sigmas likewise: 2.3e-5 vs 2.8e-6). That is diffusers' float32 schedule arithmetic,
    # which the v latents (10x smaller here) feel more: with our float64-computed sigmas and
    # timesteps, diffusers' solver and U-Net land within float32 rounding of ours (observed
    # 3.0e-6, images 5.2e-6), 10x inside the tolerances.
    make_scheduler, settings = CASES["dpmpp_2m-karras"]
    ours = run_ours(family_executor, SD2_NAME, settings)
    stock = run_diffusers(pipelines[SD2_NAME], predicting(make_scheduler, "v_prediction"), settings, ours)
    exact = run_diffusers(pipelines[SD2_NAME], predicting(lambda: dpmpp_2m_karras(OurKarrasDPMSolver), "v_prediction"),
                          settings, ours)
    stock_latent, stock_image = errors(ours, stock, "v dpmpp_2m-karras vs diffusers' float32 schedule")
    exact_latent, exact_image = errors(ours, exact, "v dpmpp_2m-karras vs diffusers on our schedule")
    assert exact_latent <= LATENT_RTOL / 10 and exact_image <= IMAGE_ATOL / 10
    assert exact_latent < stock_latent / 3 and exact_image < stock_image / 3
