"""The nodes ComfyUI workflows need (issue 15): clip_set_last_layer, load_image_mask,
karras_scheduler, cfg_guider + sampler_custom_advanced (+ the guided sampler's denoised output),
disable_noise, clip_text_encode_sdxl, latent_upscale's crop and apply_controlnet without a
negative prompt.

ComfyUI's semantics are the reference (read from its source, not copied):

* CLIPSetLastLayer(-n) reads every text encoder's n-th layer from the end (SD1.x: final norm on
  it; SDXL: none); without it each family keeps its own (SD2.x/SDXL: penultimate).
* LoadImageMask converts the picture to RGBA first, so "alpha" of an opaque picture is a zero mask
  of its size; "alpha" gives 1 - alpha, a colour channel its value.
* KarrasScheduler is k-diffusion's get_sigmas_karras (written out below).
* SamplerCustomAdvanced's denoised_output is the x0 its step callback saw last: the denoised
  estimate of the last step's (first) model call; DisableNoise is zeros, so nothing is added.
* CLIPTextEncodeSDXL sends text_g to bigG and text_l to CLIP-L, appending empty-prompt windows to
  the shorter; width/height are the original size, crop_w/crop_h the crop's left/top.
* LatentUpscale's crop "center" cuts to the target aspect with rounded margins before resizing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import test_controlnet
from PIL import Image

from latentgraph.engine import CancelToken, RunContext, WorkflowInvalid
from latentgraph.nodes.sd.handles import DisabledNoise, Latent, Noise, SamplerChoice
from latentgraph.nodes.sd.sample import guided_model
from latentgraph.nodes.sd.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "latentgraph/workflow@1"
SD1 = "latentgraph-demo.safetensors"  # the tiny SD1.x checkpoint under the shipped name (conftest.sd_folders)
PROMPT = "a red circle on a blue background, top left"
NEGATIVE = "blurry, low quality"


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def run(executor, nodes: dict, *outputs: str) -> dict:
    result = executor.run({"format": FORMAT, "nodes": nodes}, outputs=list(outputs))
    assert result.status == "succeeded", result.errors
    return result.values


def failure(executor, nodes: dict, *outputs: str) -> tuple[str, str]:
    result = executor.run({"format": FORMAT, "nodes": nodes}, outputs=list(outputs))
    assert result.status == "failed", "the run should have failed"
    return result.errors[0].node_id, str(result.errors[0].error)


def invalid(executor, nodes: dict) -> str:
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate({"format": FORMAT, "nodes": nodes})
    return str(caught.value)


def context(executor, node_type: str) -> RunContext:
    """A RunContext for calling a node's run() directly (inputs no node of the library makes)."""
    return RunContext("test", node_type, node_type, executor.services, CancelToken(), lambda *args: None)


def encode(text: str = PROMPT, clip: dict | None = None, **inputs) -> dict:
    return {"type": "clip_text_encode", "inputs": {"clip": clip or link("ckpt", "clip"), "text": text, **inputs}}


def checkpoint(name: str = SD1) -> dict:
    return {"type": "checkpoint_loader", "inputs": {"checkpoint": name}}


def embedding_of(values: dict, node: str) -> torch.Tensor:
    return values[node]["conditioning"].entries[0].embedding


# ---------------------------------------------------------------------------------------------
# clip_set_last_layer


def test_clip_set_last_layer_minus_two_is_clip_skip_two_on_sd1(sd_executor):
    nodes = {
        "ckpt": checkpoint(),
        "skip2": {"type": "clip_set_last_layer", "inputs": {"clip": link("ckpt", "clip"), "stop_at_clip_layer": -2}},
        "last": {"type": "clip_set_last_layer", "inputs": {"clip": link("ckpt", "clip"), "stop_at_clip_layer": -1}},
        "via_node": encode(clip=link("skip2", "clip")),
        "via_input": encode(clip_skip=2),
        "default": encode(),
        "via_last": encode(clip=link("last", "clip")),
        "encode_wins": encode(clip=link("skip2", "clip"), clip_skip=1),
    }
    values = run(sd_executor, nodes, *[n for n in nodes if n not in ("ckpt", "skip2", "last")])
    assert torch.equal(embedding_of(values, "via_node"), embedding_of(values, "via_input"))
    assert (embedding_of(values, "via_node") - embedding_of(values, "default")).abs().max() > 0.1
    assert torch.equal(embedding_of(values, "via_last"), embedding_of(values, "default"))  # SD1.x's own is the last
    assert torch.equal(embedding_of(values, "encode_wins"), embedding_of(values, "default"))
    # The pooled vector is the last layer's whatever the layer read (as ComfyUI and diffusers).
    pooled = [values[n]["conditioning"].entries[0].pooled for n in ("via_node", "default")]
    assert torch.equal(*pooled)


@pytest.mark.parametrize("name", ["v2-1_512-ema-pruned.safetensors", "sd_xl_base_1.0.safetensors"])
def test_sd2_and_sdxl_keep_their_penultimate_layer_unless_the_node_says_otherwise(family_executor, name):
    nodes = {
        "ckpt": checkpoint(name),
        "last": {"type": "clip_set_last_layer", "inputs": {"clip": link("ckpt", "clip"), "stop_at_clip_layer": -1}},
        "second": {"type": "clip_set_last_layer", "inputs": {"clip": link("ckpt", "clip"), "stop_at_clip_layer": -2}},
        "default": encode(),
        "skip1": encode(clip_skip=1),
        "skip2": encode(clip_skip=2),
        "via_last": encode(clip=link("last", "clip")),
        "via_second": encode(clip=link("second", "clip")),
    }
    values = run(family_executor, nodes, "default", "skip1", "skip2", "via_last", "via_second")
    assert torch.equal(embedding_of(values, "default"), embedding_of(values, "skip2"))
    assert torch.equal(embedding_of(values, "via_second"), embedding_of(values, "default"))
    assert torch.equal(embedding_of(values, "via_last"), embedding_of(values, "skip1"))
    assert (embedding_of(values, "via_last") - embedding_of(values, "default")).abs().max() > 0.1


def test_clip_set_last_layer_deeper_than_the_encoder_fails_naming_the_input(sd_executor):
    nodes = {"ckpt": checkpoint(),
             "deep": {"type": "clip_set_last_layer", "inputs": {"clip": link("ckpt", "clip"), "stop_at_clip_layer": -3}}}
    node_id, message = failure(sd_executor, nodes, "deep")
    assert node_id == "deep"
    assert "stop_at_clip_layer -3" in message and "has 2 layers" in message
    for value in (0, -25):
        nodes["deep"]["inputs"]["stop_at_clip_layer"] = value
        assert "stop_at_clip_layer" in invalid(sd_executor, nodes)


def test_the_layer_choice_survives_loras_applied_after_it(tiny_sd15):
    import dataclasses

    from latentgraph.nodes.sd.families import SD1
    from latentgraph.nodes.sd.handles import TextEncoder

    handle = TextEncoder(tiny_sd15.text_encoders, SD1, "tiny")
    assert handle.clip_skip is None
    assert dataclasses.replace(handle, clip_skip=2).with_patches().clip_skip == 2


# ---------------------------------------------------------------------------------------------
# load_image_mask


def mask_nodes(name: str) -> dict:
    nodes = {c: {"type": "load_image_mask", "inputs": {"image": name, "channel": c}} for c in ("alpha", "red", "green", "blue")}
    nodes["image"] = {"type": "load_image", "inputs": {"image": name}}
    return nodes


def test_load_image_mask_reads_each_channel_and_alpha_as_load_image_does(sd_executor):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(12, 20, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(sd_executor.services.folders.inputs / "mask.png")
    values = run(sd_executor, mask_nodes("mask.png"), "alpha", "red", "green", "blue", "image")
    expected = torch.from_numpy(rgba.astype(np.float32) / 255.0)
    for index, channel in enumerate(("red", "green", "blue")):
        mask = values[channel]["mask"]
        assert mask.shape == (1, 12, 20) and mask.dtype == torch.float32
        assert torch.equal(mask[0], expected[..., index])
    assert torch.equal(values["alpha"]["mask"][0], 1 - expected[..., 3])  # 1 where transparent
    assert torch.equal(values["alpha"]["mask"], values["image"]["mask"])


def test_load_image_mask_of_an_opaque_or_grey_image(sd_executor):
    inputs = sd_executor.services.folders.inputs
    rgb = np.zeros((8, 10, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 51, 0
    Image.fromarray(rgb, "RGB").save(inputs / "rgb.png")
    values = run(sd_executor, mask_nodes("rgb.png"), "alpha", "red", "green")
    # ComfyUI converts to RGBA first: an opaque picture's alpha mask is zeros of its size.
    assert values["alpha"]["mask"].shape == (1, 8, 10) and not values["alpha"]["mask"].any()
    assert values["red"]["mask"].eq(1).all() and torch.allclose(values["green"]["mask"], torch.full((1, 8, 10), 0.2))

    grey = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (4, 1))
    Image.fromarray(grey, "L").save(inputs / "grey.png")
    values = run(sd_executor, mask_nodes("grey.png"), "red", "blue")
    assert torch.equal(values["red"]["mask"][0], torch.from_numpy(grey.astype(np.float32) / 255))
    assert torch.equal(values["red"]["mask"], values["blue"]["mask"])

    # A 16-bit greyscale PNG: divided by 255 as ComfyUI reads integer images, not clipped to white.
    deep = (np.arange(8, dtype=np.uint16) * 8192)[None].repeat(2, axis=0)
    Image.fromarray(deep).save(inputs / "deep.png")
    red = run(sd_executor, mask_nodes("deep.png"), "red")["red"]["mask"][0, 0]
    assert torch.equal(red, torch.tensor([min(255, int(v / 255)) / 255 for v in deep[0]], dtype=torch.float32))


def test_load_image_mask_refuses_a_missing_file_or_unknown_channel(sd_executor):
    nodes = {"m": {"type": "load_image_mask", "inputs": {"image": "nowhere.png", "channel": "alpha"}}}
    assert "nowhere.png" in invalid(sd_executor, nodes)
    Image.new("RGB", (4, 4)).save(sd_executor.services.folders.inputs / "there.png")
    nodes["m"]["inputs"] = {"image": "there.png", "channel": "luminance"}
    assert "channel" in invalid(sd_executor, nodes)


# ---------------------------------------------------------------------------------------------
# karras_scheduler


def k_diffusion_karras(n: int, sigma_min: float, sigma_max: float, rho: float,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """k-diffusion's get_sigmas_karras, written out: a ramp (float32 there), sigma^(1/rho) spacing, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=dtype)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


@pytest.mark.parametrize("steps, sigma_max, sigma_min, rho", [(20, 14.614642, 0.0291675, 7.0), (1, 14.614642, 0.0291675, 7.0),
                                                              (9, 80.0, 0.002, 3.0), (33, 1.5, 0.3, 12.0)])
def test_karras_scheduler_is_k_diffusions_formula(sd_executor, steps, sigma_max, sigma_min, rho):
    node = {"type": "karras_scheduler", "inputs": {"steps": steps, "sigma_max": sigma_max, "sigma_min": sigma_min, "rho": rho}}
    sigmas = run(sd_executor, {"k": node}, "k")["k"]["sigmas"]
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert sigmas[0] == pytest.approx(sigma_max, rel=1e-6)
    # The formula in float64, rounded once; k-diffusion's float32 arithmetic loses a few units
    # where (sigma_min^(1/rho) - sigma_max^(1/rho)) cancels (4.5e-6 relative at 80 / 0.002, rho 3).
    assert torch.equal(sigmas, k_diffusion_karras(steps, sigma_min, sigma_max, rho, torch.float64).float())
    torch.testing.assert_close(sigmas, k_diffusion_karras(steps, sigma_min, sigma_max, rho), rtol=1e-5, atol=0)


def test_karras_scheduler_over_the_models_range_is_the_schedule_nodes_karras(sd_executor):
    schedule = run(sd_executor, {"ckpt": checkpoint()}, "ckpt")["ckpt"]["model"].schedule
    nodes = {
        "ckpt": checkpoint(),
        "ours": {"type": "scheduler", "inputs": {"model": link("ckpt", "model"), "schedule": "karras", "steps": 13}},
        "k": {"type": "karras_scheduler", "inputs": {"steps": 13, "sigma_max": schedule.sigma_max,
                                                     "sigma_min": schedule.sigma_min, "rho": 7.0}},
    }
    values = run(sd_executor, nodes, "ours", "k")
    assert torch.equal(values["k"]["sigmas"], values["ours"]["sigmas"])
    # ComfyUI's defaults are SD1.x's training range as it computes it (float32: 1.2e-5 off at sigma_min).
    torch.testing.assert_close(values["k"]["sigmas"][[0, -2]], torch.tensor([14.614642, 0.0291675]), rtol=2e-5, atol=0)


def test_karras_scheduler_refuses_levels_that_do_not_go_down(sd_executor):
    node = {"type": "karras_scheduler", "inputs": {"steps": 4, "sigma_max": 0.5, "sigma_min": 2.0}}
    node_id, message = failure(sd_executor, {"k": node}, "k")
    assert node_id == "k" and "sigma_min (2.0) is above sigma_max (0.5)" in message
    node["inputs"].update(sigma_min=0.0, sigma_max=1.0)
    assert "sigma_min" in invalid(sd_executor, {"k": node})
    node["inputs"].update(sigma_min=0.1, steps=100000)
    assert "steps" in invalid(sd_executor, {"k": node})


# ---------------------------------------------------------------------------------------------
# cfg_guider, sampler_custom_advanced, disable_noise, the guided sampler's denoised output


def custom_nodes(sampler: str, *, steps: int = 6, seed: int = 7, size: int = 64, denoise: float = 1.0) -> dict:
    """Prompts, an empty latent, noise, schedule and sampler choice, with a guided sampler
    ("guided") and the same stages through cfg_guider + sampler_custom_advanced ("advanced")."""
    stages = {"noise": link("noise", "noise"), "sampler": link("choice", "sampler"), "sigmas": link("sigmas", "sigmas"),
              "latent": link("latent", "latent")}
    return {
        "ckpt": checkpoint(),
        "positive": encode(PROMPT),
        "negative": encode(NEGATIVE),
        "latent": {"type": "empty_latent", "inputs": {"width": size, "height": size, "batch_size": 2}},
        "noise": {"type": "noise", "inputs": {"seed": seed}},
        "sigmas": {"type": "scheduler", "inputs": {"model": link("ckpt", "model"), "schedule": "karras", "steps": steps,
                                                   "denoise": denoise}},
        "choice": {"type": "sampler_select", "inputs": {"sampler": sampler}},
        "guided": {"type": "guided_sampler", "inputs": {"model": link("ckpt", "model"), "positive": link("positive", "conditioning"),
                                                        "negative": link("negative", "conditioning"), "cfg": 5.0, **stages}},
        "guider": {"type": "cfg_guider", "inputs": {"model": link("ckpt", "model"), "positive": link("positive", "conditioning"),
                                                    "negative": link("negative", "conditioning"), "cfg": 5.0}},
        "advanced": {"type": "sampler_custom_advanced", "inputs": {"guider": link("guider", "guider"), **stages}},
    }


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "heun"])
def test_sampler_custom_advanced_is_the_guided_sampler_bit_for_bit(sd_executor, sampler):
    values = run(sd_executor, custom_nodes(sampler), "guided", "advanced", "latent")
    for output in ("latent", "denoised"):
        assert torch.equal(values["advanced"][output].samples, values["guided"][output].samples), output
    assert (values["advanced"]["latent"].samples - values["latent"]["latent"].samples).abs().max() > 0.1


def test_cfg_guider_defaults_to_comfyuis_cfg(sd_executor):
    from latentgraph.engine import registry

    assert registry.get("cfg_guider").inputs["cfg"].default == 8.0


def test_denoised_is_the_last_model_calls_x0_and_the_latent_when_that_step_lands_on_it(sd_executor):
    from latentgraph.nodes.sampling import GuidedSampler

    values = run(sd_executor, custom_nodes("dpmpp_2m"), "guided", "ckpt", "positive", "negative", "sigmas", "latent")
    # DPM++ 2M's step to sigma 0 returns the denoised estimate itself: both outputs are one tensor's values.
    assert torch.equal(values["guided"]["denoised"].samples, values["guided"]["latent"].samples)

    model = values["ckpt"]["model"]
    positive, negative = values["positive"]["conditioning"], values["negative"]["conditioning"]
    latent = values["latent"]["latent"]
    full = values["sigmas"]["sigmas"]
    leftover = full[:4]  # stops at the fourth level (about 1): the latent keeps that noise, the estimate does not

    def guided(sampler: str, sigmas: torch.Tensor) -> GuidedSampler.Outputs:
        node = GuidedSampler.model_construct(model=model, positive=positive, negative=negative, noise=Noise(3),
                                             sampler=SamplerChoice(sampler), sigmas=sigmas, latent=latent, cfg=5.0)
        return node.run(context(sd_executor, "guided_sampler"))

    for sampler in ("euler", "heun"):  # heun calls the model twice a step: the estimate is the first call's
        out = guided(sampler, leftover)
        before_last = guided(sampler, leftover[:-1]).latent.samples  # the x the last step starts from
        with torch.inference_mode():
            by_hand = guided_model(model, positive, negative, 5.0, (64, 64), latent)(
                before_last, leftover[-2].expand(before_last.shape[0]))
        torch.testing.assert_close(out.denoised.samples, by_hand, rtol=0, atol=1e-6 * float(by_hand.abs().max()))
        assert (out.denoised.samples - out.latent.samples).std() > 0.5 * float(leftover[-1])

    # Nothing to walk: both outputs are the latent as it came.
    out = guided("euler", full[-1:])
    assert out.latent is latent and out.denoised is latent


def img2img_nodes(executor, noise: dict, sampler: str = "euler") -> dict:
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(executor.services.folders.inputs / "photo.png")
    nodes = custom_nodes(sampler, steps=4, denoise=0.5)
    nodes["photo"] = {"type": "load_image", "inputs": {"image": "photo.png"}}
    nodes["latent"] = {"type": "vae_encode", "inputs": {"vae": link("ckpt", "vae"), "image": link("photo", "image")}}
    nodes["noise"] = noise
    nodes["split"] = {"type": "ksampler_advanced", "inputs": {
        "model": link("ckpt", "model"), "positive": link("positive", "conditioning"), "negative": link("negative", "conditioning"),
        "latent": link("latent", "latent"), "add_noise": False, "seed": noise["inputs"].get("seed", 0), "steps": 8,
        "cfg": 5.0, "sampler": sampler, "scheduler": "karras", "start_step": 4, "end_step": 10000}}
    return nodes


def test_disable_noise_samples_the_encoded_image_as_it_is(sd_executor):
    values = run(sd_executor, img2img_nodes(sd_executor, {"type": "disable_noise", "inputs": {}}),
                 "advanced", "split", "latent", "sigmas", "ckpt", "positive", "negative")
    latent, sigmas = values["latent"]["latent"], values["sigmas"]["sigmas"]
    assert isinstance(values["advanced"]["latent"], Latent) and 0.1 < float(sigmas[0]) < 14  # part-way down (denoise 0.5)
    # ComfyUI's result: the sampler started from the latent itself, with nothing added.
    with torch.inference_mode():
        model = guided_model(values["ckpt"]["model"], values["positive"]["conditioning"],
                             values["negative"]["conditioning"], 5.0, (64, 64), latent)
        by_hand = SAMPLERS["euler"](model, latent.samples.clone(), sigmas)
    torch.testing.assert_close(values["advanced"]["latent"].samples, by_hand, rtol=0, atol=1e-6 * float(by_hand.abs().max()))
    # ksampler_advanced continuing steps 4..8 of 8 without noise walks the same sigmas.
    assert torch.equal(values["advanced"]["latent"].samples, values["split"]["latent"].samples)
    seeded = run(sd_executor, img2img_nodes(sd_executor, {"type": "noise", "inputs": {"seed": 0}}), "advanced")
    assert (seeded["advanced"]["latent"].samples - by_hand).abs().max() > 0.1


def test_disable_noise_keeps_its_seed_for_the_step_noise(sd_executor):
    def advanced(seed: int) -> dict:
        nodes = img2img_nodes(sd_executor, {"type": "disable_noise", "inputs": {"seed": seed}}, "euler_ancestral")
        return run(sd_executor, nodes, "advanced", "split")

    first, again, other = advanced(11), advanced(11), advanced(12)
    assert torch.equal(first["advanced"]["latent"].samples, first["split"]["latent"].samples)
    assert torch.equal(first["advanced"]["latent"].samples, again["advanced"]["latent"].samples)
    assert (first["advanced"]["latent"].samples - other["advanced"]["latent"].samples).abs().max() > 1e-3
    assert DisabledNoise(11).generate(torch.ones(2, 4, 3, 5)).eq(0).all()


# ---------------------------------------------------------------------------------------------
# clip_text_encode_sdxl

SDXL = "sd_xl_base_1.0.safetensors"
TEXT_G = "a photograph of a lighthouse on a cliff at sunset, dramatic sky"
TEXT_L = "oil painting, thick brush strokes"
LONG = ", ".join(["a small red boat on a calm green lake"] * 12)  # 108 tokens: two windows


def sdxl_encode(text_g: str, text_l: str, **sizes) -> dict:
    return {"type": "clip_text_encode_sdxl", "inputs": {"clip": link("ckpt", "clip"), "text_g": text_g, "text_l": text_l, **sizes}}


@pytest.fixture(scope="module")
def sdxl_pipe(family_checkpoints, tmp_path_factory):
    from test_sdxl_exact import from_single_file, write_diffusers_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import StableDiffusionXLPipeline
    config = write_diffusers_config(tmp_path_factory.mktemp("sdxl-config"), refiner=False)
    return from_single_file(StableDiffusionXLPipeline, family_checkpoints[SDXL], config)


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_clip_text_encode_sdxl_is_diffusers_encode_prompt_with_two_prompts(family_executor, sdxl_pipe):
    nodes = {"ckpt": checkpoint(SDXL), "two": sdxl_encode(TEXT_G, TEXT_L), "swapped": sdxl_encode(TEXT_L, TEXT_G)}
    values = run(family_executor, nodes, "two", "swapped")
    with torch.no_grad():
        context, _, pooled, _ = sdxl_pipe.encode_prompt(prompt=TEXT_L, prompt_2=TEXT_G, device=torch.device("cpu"),
                                                        num_images_per_prompt=1, do_classifier_free_guidance=False)
    entry = values["two"]["conditioning"].entries[0]
    assert entry.embedding.shape == context.shape == (1, 77, 64 + 128)
    assert relative(entry.embedding, context) < 1e-4 and relative(entry.pooled, pooled) < 1e-4
    swapped = values["swapped"]["conditioning"].entries[0]
    assert relative(swapped.embedding, context) > 1e-2 and relative(swapped.pooled, pooled) > 1e-2


def test_clip_text_encode_sdxl_with_one_text_is_encode_prompt_and_carries_the_sizes(family_executor):
    nodes = {"ckpt": checkpoint(SDXL), "plain": encode(TEXT_G),
             "two": sdxl_encode(TEXT_G, TEXT_G, width=96, height=80, crop_w=16, crop_h=8, target_width=160, target_height=144),
             "sized": {"type": "sdxl_conditioning", "inputs": {
                 "conditioning": link("plain", "conditioning"), "original_width": 96, "original_height": 80,
                 "crop_left": 16, "crop_top": 8, "target_width": 160, "target_height": 144}},
             "zeros": sdxl_encode(TEXT_G, TEXT_G, width=0, height=0, target_width=0, target_height=0)}
    values = run(family_executor, nodes, "plain", "two", "sized", "zeros")
    two, sized = values["two"]["conditioning"].entries[0], values["sized"]["conditioning"].entries[0]
    plain = values["plain"]["conditioning"].entries[0]
    assert torch.equal(two.embedding, plain.embedding) and torch.equal(two.pooled, plain.pooled)
    assert two.extra == sized.extra == {"original_width": 96, "original_height": 80, "crop_left": 16, "crop_top": 8,
                                        "target_width": 160, "target_height": 144}
    # 0: the generated image's own size, as for SDXL size conditioning (the crop is always a number).
    assert values["zeros"]["conditioning"].entries[0].extra == {"crop_left": 0, "crop_top": 0}


@pytest.mark.parametrize("longer", ["text_l", "text_g"])
def test_the_shorter_text_gets_empty_prompt_windows(family_executor, longer):
    text_g, text_l = (TEXT_G, LONG) if longer == "text_l" else (LONG, TEXT_L)
    nodes = {"ckpt": checkpoint(SDXL), "two": sdxl_encode(text_g, text_l),
             "g": encode(text_g), "l": encode(text_l), "empty": encode("")}
    values = run(family_executor, nodes, "two", "g", "l", "empty")
    two = values["two"]["conditioning"].entries[0]
    g, l, empty = (embedding_of(values, n) for n in ("g", "l", "empty"))
    assert two.embedding.shape == (1, 154, 192)
    short, long_ = (g, l) if longer == "text_l" else (l, g)
    short_half = slice(64, None) if longer == "text_l" else slice(None, 64)  # bigG is the second 128 channels
    long_half = slice(None, 64) if longer == "text_l" else slice(64, None)
    assert short.shape[1] == 77 and long_.shape[1] == 154
    # Windows are encoded one by one: the shorter text's first window, then the empty prompt's.
    torch.testing.assert_close(two.embedding[:, :77, short_half], short[:, :, short_half], rtol=0, atol=1e-5)
    torch.testing.assert_close(two.embedding[:, 77:, short_half], empty[:, :, short_half], rtol=0, atol=1e-5)
    torch.testing.assert_close(two.embedding[..., long_half], long_[..., long_half], rtol=0, atol=1e-5)
    torch.testing.assert_close(two.pooled, values["g"]["conditioning"].entries[0].pooled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, label", [("sd_xl_refiner_1.0.safetensors", "Stable Diffusion XL refiner"),
                                         ("v2-1_512-ema-pruned.safetensors", "Stable Diffusion 2")])
def test_clip_text_encode_sdxl_refuses_other_families(family_executor, name, label):
    node_id, message = failure(family_executor, {"ckpt": checkpoint(name), "two": sdxl_encode("a", "b")}, "two")
    assert node_id == "two"
    assert "Encode prompt (SDXL, two texts) needs the text encoders of an SDXL base checkpoint" in message
    assert label in message and "use Encode prompt" in message


# ---------------------------------------------------------------------------------------------
# latent_upscale crop


def comfy_center_box(old_width: int, old_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """ComfyUI's common_upscale crop "center", written out: (x, y, width, height) of the part kept
    of an old_width x old_height latent for a width x height target (latent units)."""
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return x, y, old_width - x * 2, old_height - y * 2


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("shape, width, height", [((2, 4, 6, 10), 64, 64), ((1, 4, 10, 6), 96, 64), ((1, 4, 7, 9), 72, 136)])
def test_latent_upscale_center_crop_is_comfyuis(sd_executor, method, shape, width, height):
    import torch.nn.functional as F

    from latentgraph.nodes.latents import LatentUpscale

    samples = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mask = torch.rand((1, 1, shape[-2] * 8, shape[-1] * 8), generator=torch.Generator().manual_seed(1))  # pixel-sized

    def upscale(crop: str) -> Latent:
        node = LatentUpscale.model_construct(latent=Latent(samples, mask), method=method, width=width, height=height,
                                             scale_by=1.0, crop=crop)
        return node.run(context(sd_executor, "latent_upscale")).latent

    size = (height // 8, width // 8)
    x, y, kept_w, kept_h = comfy_center_box(shape[-1], shape[-2], size[1], size[0])
    assert (kept_w, kept_h) != tuple(shape[-1:-3:-1])  # something is cut
    antialias = {"antialias": True} if method in ("bilinear", "bicubic") else {}
    cropped = upscale("center")
    expected = F.interpolate(samples[..., y:y + kept_h, x:x + kept_w], size=size, mode=method, **antialias)
    assert torch.equal(cropped.samples, expected)
    # The noise mask is cut to the same part of the picture (8 mask pixels per latent pixel here).
    assert torch.equal(cropped.noise_mask, mask[..., y * 8:(y + kept_h) * 8, x * 8:(x + kept_w) * 8])
    stretched = upscale("disabled")
    assert torch.equal(stretched.samples, F.interpolate(samples, size=size, mode=method, **antialias))
    assert stretched.noise_mask is mask


def test_latent_upscale_crop_defaults_to_disabled(sd_executor):
    from latentgraph.engine import registry

    info = registry.get("latent_upscale").inputs["crop"]
    assert info.default == "disabled" and info.choices() == ["disabled", "center"]


# ---------------------------------------------------------------------------------------------
# apply_controlnet without a negative prompt


# test_controlnet's fixtures: the tiny ControlNets and the SD1.x executor with them and two hint images.
controlnet_files = test_controlnet.controlnet_files
cn_executor = test_controlnet.cn_executor


@pytest.fixture
def cn_document(cn_executor):
    from test_controlnet import CANNY, sd1_document

    document = sd1_document([{"name": CANNY, "image": "edges.png", "strength": 0.8}])
    document["nodes"]["sampler"]["inputs"]["negative"] = link("negative", "conditioning")  # the plain negative
    return document


def sampled(executor, document: dict) -> torch.Tensor:
    result = executor.run(document, outputs=["sampler"])
    assert result.status == "succeeded", result.errors
    return result.values["sampler"]["latent"].samples


def test_apply_controlnet_on_the_prompt_alone_is_the_both_prompts_runs_positive(cn_executor, cn_document):
    import copy

    both = sampled(cn_executor, cn_document)  # the negative also went through the node; the sampler reads the plain one
    alone = copy.deepcopy(cn_document)
    del alone["nodes"]["apply0"]["inputs"]["negative"]
    assert torch.equal(sampled(cn_executor, alone), both)

    plain = copy.deepcopy(cn_document)
    plain["nodes"]["sampler"]["inputs"]["positive"] = link("positive", "conditioning")
    assert (sampled(cn_executor, plain) - both).abs().max() > 1e-3  # the ControlNet did act

    # Reading the negative output of a node that had none fails at the reader, saying why.
    alone["nodes"]["sampler"]["inputs"]["negative"] = link("apply0", "negative")
    result = cn_executor.run(alone, outputs=["sampler"])
    assert result.status == "failed" and result.errors[0].node_id == "sampler"
    assert "Apply ControlNet's negative output, but that node's negative input is not connected" in str(result.errors[0].error)
    alone["nodes"]["apply0"]["inputs"]["strength"] = 0.0  # the strength-0 shortcut too
    assert "negative input is not connected" in str(cn_executor.run(alone, outputs=["sampler"]).errors[0].error)


# ---------------------------------------------------------------------------------------------
# Catalog


NEW_NODES = ("clip_set_last_layer", "clip_text_encode_sdxl", "load_image_mask", "karras_scheduler", "cfg_guider",
             "sampler_custom_advanced", "disable_noise")


def test_the_new_nodes_are_described_in_the_catalog_and_the_readme():
    import latentgraph.nodes.library  # noqa: F401
    from latentgraph.engine import registry

    readme = (ROOT / "README.md").read_text()
    for name in NEW_NODES:
        entry = registry.get(name).catalog_entry()
        assert len(entry["description"]) > 60, name
        assert all(i["description"] for i in entry["inputs"]) and all(o["description"] for o in entry["outputs"]), name
        assert f"`{name}`" in readme, name
    assert json.dumps(registry.get("sampler_custom_advanced").catalog_entry())  # JSON-able
