"""LoRA and LyCORIS files (nodes/sd/lora.py, nodes/sd/patches.py, the lora_loader nodes) on the tiny
checkpoints, against diffusers and against the formulas written out here.

* diffusers: the tiny checkpoint loaded by diffusers' own single-file loader (local configs, see
  tests/diffusers_tiny.py), `load_lora_weights(file)`, `fuse_lora(components=[...], lora_scale=s)`
  per component (so U-Net and text encoder strengths can differ), `unload_lora_weights()` (which
  keeps the fused weights). Compared with ours: every U-Net weight (ours converted to diffusers'
  names by diffusers' `convert_ldm_unet_checkpoint`), every text encoder weight, the U-Net's output
  and the prompt encoding. diffusers must have changed as many weights as we did, so a layer it
  silently dropped cannot pass for a match. Formats: kohya / A1111 with LoCon convolutions (SD1.x,
  diffusers U-Net names), kohya SDXL (LDM U-Net names as kohya's sdxl scripts write, and diffusers
  names; lora_te1_ CLIP-L, lora_te2_ bigG), and what diffusers' `save_lora_weights` writes from
  peft-wrapped models (SD1.x and SDXL; diffusers' older `lora.down` / `lora_linear_layer` names
  and peft's lora_A / lora_B; alphas only in `lora_adapter_metadata`).
* LoHa, LoKr (all factor layouts) and Tucker LoCon, which diffusers does not read: every patched
  weight equals base + strength * the delta computed here from the file's tensors.
* Strength 0, removal, chaining; the executor: caching across a strength sweep, the report,
  error messages, the model-only node; exact restoring of base weights (from the safetensors file,
  from backups for a pickle checkpoint) and the error when the file changed on disk.

Observed (one thread, float32), max |ours - diffusers| / max |diffusers|:

    SD1.x kohya LoCon, 0.7 / 1.3    weights 1.1e-7  U-Net output 5.2e-7  prompt 5.4e-7
    SD1.x PEFT (both namings)       0 (bit for bit: the same float32 operations)
    SDXL kohya, LDM or diffusers    weights 1.1e-7  U-Net output 1.0e-6  prompt 5.5e-7  pooled 6.8e-7
    SDXL PEFT                       weights 9.5e-8  U-Net output 7.1e-7  prompt 0       pooled 2.2e-7
    LoHa / LoKr / Tucker vs formula weights 1.4e-7 (each layer moves by 9-33% of the weight's max)

WEIGHT_TOL = 1e-5 (float32 rounding of base + s * up @ down, summed in another order), OUTPUT_TOL =
1e-4 (test_sd_pipeline's and test_sdxl_exact's U-Net and text tolerance). Each LoRA moves the U-Net
output by 5-50% of its magnitude and a wrong strength by over 1%: far outside them (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lora_tiny
from conftest import DEMO_NAME, SD2_BASE_NAME, SDXL_NAME
from diffusers_tiny import clip_text_config, scheduler_config, unet_config, vae_config, write_pipeline_folder
from latentgraph.nodes.sd.checkpoint import load_checkpoint
from latentgraph.nodes.sd.lora import lora_patches, read_lora
from latentgraph.nodes.sd.patches import BackupWeights, FileWeights, PatchError, patch_state, patched
from latentgraph.nodes.sd.prompt import encode_text
from sd_tiny import (
    TINY_CLIP_G,
    TINY_CLIP_L,
    TINY_SD2_UNET,
    TINY_SDXL_UNET,
    TINY_TEXT_ENCODER,
    TINY_UNET,
    TINY_VAE,
)
from test_sd_pipeline import one_thread  # noqa: F401  (module-scoped autouse: single-threaded, reproducible)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on a blue background, top left"
WEIGHT_TOL = 1e-5
OUTPUT_TOL = 1e-4
SD15_WORKFLOW_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # what workflows/lora.json names
EXAMPLE_LORA = "example_lora.safetensors"


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bitwise_equal(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], label: str) -> None:
    assert set(ours) == set(theirs), label
    different = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
    assert not different, f"{label}: {len(different)} tensors differ, e.g. {different[:3]}"


# --- our side -------------------------------------------------------------------------------------


def our_patches(loaded, path: Path, strength_model: float = 1.0, strength_clip: float = 1.0, encoders: bool = True):
    lora = read_lora(path)
    return lora_patches(lora, loaded.family.spec, loaded.unet, loaded.text_encoders if encoders else {},
                        strength_model, strength_clip)


@contextmanager
def applied(loaded, patches) -> Iterator[None]:
    """The loaded checkpoint's U-Net and text encoders with `patches` (as the nodes apply them)."""
    with ExitStack() as stack:
        stack.enter_context(patched(loaded.unet, [p for p in patches if p.target == "unet"]))
        for name, encoder in loaded.text_encoders.items():
            stack.enter_context(patched(encoder, [p for p in patches if p.target == name]))
        yield


def unset(loaded) -> None:
    """Put the base weights back (patches are kept after a block until a use with other ones)."""
    with applied(loaded, []):
        pass


def unet_in_diffusers_names(unet: torch.nn.Module, config: Mapping) -> dict[str, torch.Tensor]:
    """Our U-Net's weights under diffusers' names, converted by diffusers' own converter (copies:
    the converter hands back the parameters themselves, which patching changes in place)."""
    return convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in state(unet).items()},
                                       dict(config))


def inputs(context_dim: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 77, context_dim, generator=generator)
    return x, torch.tensor([999.0, 321.5]), context


# --- diffusers' side ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15_config(tmp_path_factory) -> Path:
    components = {
        "unet": ("diffusers", "UNet2DConditionModel", unet_config(TINY_UNET)),
        "vae": ("diffusers", "AutoencoderKL", vae_config(TINY_VAE)),
        "text_encoder": ("transformers", "CLIPTextModel", clip_text_config(TINY_TEXT_ENCODER)),
        "scheduler": ("diffusers", "DDIMScheduler", scheduler_config(clip_sample=False)),
    }
    return write_pipeline_folder(tmp_path_factory.mktemp("sd15-config"), "StableDiffusionPipeline", components,
                                 {"tokenizer": "<|endoftext|>"}, safety_checker=[None, None],
                                 feature_extractor=[None, None], requires_safety_checker=False)


@pytest.fixture(scope="module")
def sdxl_config(tmp_path_factory) -> Path:
    from test_sdxl_exact import write_diffusers_config

    return write_diffusers_config(tmp_path_factory.mktemp("sdxl-config"), refiner=False)


def pipeline(pipeline_class, checkpoint: Path, config: Path):
    """A fresh diffusers pipeline on the checkpoint (each test fuses its own LoRA into it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {"add_watermarker": False} if pipeline_class.__name__.startswith("StableDiffusionXL") else {}
        pipe = pipeline_class.from_single_file(str(checkpoint), config=str(config), local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_fuse(pipe, path: Path, scales: Mapping[str, float]) -> dict[str, int]:
    """Load and fuse a LoRA into the pipeline at a scale per component; how many weights of each
    component it changed."""
    components = {name: getattr(pipe, name) for name in scales}
    before = {name: state(module) for name, module in components.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(str(path), adapter_name="test")
        for name, scale in scales.items():
            pipe.fuse_lora(components=[name], lora_scale=scale, adapter_names=["test"])
        pipe.unload_lora_weights()
    return {name: sum(not torch.equal(before[name][k], v) for k, v in module.state_dict().items())
            for name, module in components.items()}


def diffusers_prompt(pipe) -> tuple[torch.Tensor, torch.Tensor | None]:
    with torch.no_grad():
        out = pipe.encode_prompt(PROMPT, device=torch.device("cpu"), num_images_per_prompt=1,
                                 do_classifier_free_guidance=False)
    return (out[0], out[2]) if len(out) == 4 else (out[0], None)


def compare_with_diffusers(loaded, pipe, patches, report, changed: Mapping[str, int],
                           encoders: Mapping[str, str], sdxl: bool = False) -> dict[str, float]:
    """Weights, U-Net output and prompt encoding of our patched model against diffusers' fused
    pipeline (encoders: diffusers component -> our encoder name). Returns the errors."""
    # diffusers changed as many weights as we applied layers (each layer: one weight).
    assert changed["unet"] == report.applied["unet"] > 0
    for component, ours in encoders.items():
        if component in changed:
            assert changed[component] == report.applied[ours] > 0, component
    errors = {}
    context_dim = loaded.unet.config.context_dim
    x, t, context = inputs(context_dim)
    extra, their_extra = {}, {}
    if sdxl:
        from test_sdxl_exact import add_embedding_input

        generator = torch.Generator().manual_seed(6)
        pooled = torch.randn(2, 128, generator=generator)
        time_ids = torch.tensor([[96.0, 128, 0, 0, 96, 128], [80, 96, 8, 16, 144, 160]])
        extra = {"y": add_embedding_input(pipe.unet, pooled, time_ids)}
        their_extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    with applied(loaded, patches), torch.no_grad():
        ours = unet_in_diffusers_names(loaded.unet, pipe.unet.config)
        theirs = pipe.unet.state_dict()
        assert set(ours) == set(theirs)
        errors["unet weights"] = max(relative_error(ours[k], theirs[k]) for k in theirs)
        for component, name in encoders.items():
            our_state, their_state = loaded.text_encoders[name].state_dict(), getattr(pipe, component).state_dict()
            assert set(our_state) == set(their_state)
            errors[f"{component} weights"] = max(relative_error(our_state[k], their_state[k]) for k in their_state)
        out = loaded.unet(x, t, context, **extra)
        their_out = pipe.unet(x, t, encoder_hidden_states=context, **their_extra).sample
        errors["unet output"] = relative_error(out, their_out)
        our_context, our_pooled = encode_text(loaded.text_encoders, loaded.family.spec, PROMPT)
        their_context, their_pooled = diffusers_prompt(pipe)
        errors["prompt"] = relative_error(our_context, their_context)
        if their_pooled is not None:
            errors["pooled"] = relative_error(our_pooled, their_pooled)
    print(errors)
    for label, error in errors.items():
        assert error <= (WEIGHT_TOL if label.endswith("weights") else OUTPUT_TOL), (label, error)
    # The LoRA matters: the base model's output is far from the patched one.
    with applied(loaded, []), torch.no_grad():
        base_out = loaded.unet(x, t, context, **extra)
    assert relative_error(base_out, their_out) > 100 * OUTPUT_TOL
    return errors


@pytest.fixture
def sd15(tiny_sd15_checkpoint):
    """Our tiny SD1.x checkpoint loaded for one test (patched freely), and its file."""
    return load_checkpoint(tiny_sd15_checkpoint), tiny_sd15_checkpoint


@pytest.fixture
def sdxl(family_checkpoints):
    return load_checkpoint(family_checkpoints[SDXL_NAME]), family_checkpoints[SDXL_NAME]


# ---------------------------------------------------------------------------------------------
# Equality with diffusers


def test_kohya_sd15_locon_equals_diffusers_with_different_model_and_clip_strengths(sd15, sd15_config, tmp_path):
    loaded, checkpoint = sd15
    layers = lora_tiny.sd15_kohya_layers(convs=True)
    assert any(name.endswith("_conv1") for name in layers) and any("_te_" in name for name in layers)
    path = lora_tiny.write_kohya_lora(tmp_path / "kohya.safetensors", layers)
    pipe = pipeline(StableDiffusionPipeline, checkpoint, sd15_config)
    changed = diffusers_fuse(pipe, path, {"unet": 0.7, "text_encoder": 1.3})
    patches, report = our_patches(loaded, path, strength_model=0.7, strength_clip=1.3)
    assert report.summary() == {"applied": {"unet": 48 + 16, "clip_l": 12}, "skipped": 0, "skipped_reasons": {},
                                "skipped_layers": []}
    compare_with_diffusers(loaded, pipe, patches, report, changed, {"text_encoder": "clip_l"})

    # A wrong strength is far off (U-Net at 1.0 instead of 0.7; text at 0.7 instead of 1.3).
    wrong, _ = our_patches(loaded, path, strength_model=1.0, strength_clip=0.7)
    x, t, context = inputs(64)
    with applied(loaded, wrong), torch.no_grad():
        out = loaded.unet(x, t, context)
        our_context, _ = encode_text(loaded.text_encoders, loaded.family.spec, PROMPT)
        their_out = pipe.unet(x, t, encoder_hidden_states=context).sample
        their_context, _ = diffusers_prompt(pipe)
    assert relative_error(out, their_out) > 100 * OUTPUT_TOL
    assert relative_error(our_context, their_context) > 100 * OUTPUT_TOL


@pytest.mark.parametrize("diffusers_names", [True, False], ids=["diffusers-names", "peft-names"])
def test_peft_sd15_lora_saved_by_diffusers_equals_diffusers(sd15, sd15_config, tmp_path, diffusers_names):
    loaded, checkpoint = sd15
    path = lora_tiny.write_peft_lora(tmp_path / "peft", "StableDiffusionPipeline", TINY_UNET,
                                     {"text_encoder": TINY_TEXT_ENCODER}, diffusers_names=diffusers_names)
    tensors = load_file(path)
    with open(path, "rb") as handle:  # what diffusers 0.42 writes (with transformers >= 5.6's flat CLIPTextModel)
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    alphas = json.loads(header["__metadata__"]["lora_adapter_metadata"])
    assert (alphas["unet.lora_alpha"], alphas["unet.r"], alphas["text_encoder.lora_alpha"]) == (8.0, 4, 2.0)
    assert not any(key.endswith(".alpha") for key in tensors)  # the alphas are only in the metadata
    if diffusers_names:
        assert "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight" in tensors
        assert "text_encoder.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight" in tensors
    else:
        assert "unet.mid_block.attentions.0.proj_in.lora_A.weight" in tensors
        assert "text_encoder.encoder.layers.1.mlp.fc2.lora_B.weight" in tensors
    pipe = pipeline(StableDiffusionPipeline, checkpoint, sd15_config)
    changed = diffusers_fuse(pipe, path, {"unet": 1.0, "text_encoder": 1.0})
    patches, report = our_patches(loaded, path)
    assert report.applied == {"unet": 32 if diffusers_names else 48, "clip_l": 8 if diffusers_names else 12}
    assert not report.skipped and not report.unread
    compare_with_diffusers(loaded, pipe, patches, report, changed, {"text_encoder": "clip_l"})


def test_peft_lora_without_metadata_takes_alpha_as_rank_like_diffusers(sd15, sd15_config, tmp_path):
    loaded, checkpoint = sd15
    path = lora_tiny.write_peft_lora(tmp_path / "peft", "StableDiffusionPipeline", TINY_UNET,
                                     {"text_encoder": TINY_TEXT_ENCODER}, metadata=False, diffusers_names=False)
    pipe = pipeline(StableDiffusionPipeline, checkpoint, sd15_config)
    changed = diffusers_fuse(pipe, path, {"unet": 0.5, "text_encoder": 0.5})
    patches, report = our_patches(loaded, path, 0.5, 0.5)
    compare_with_diffusers(loaded, pipe, patches, report, changed, {"text_encoder": "clip_l"})


def test_peft_alpha_pattern_in_the_metadata_is_honoured(sd15, tmp_path):
    """PEFT's alpha_pattern (per-module alpha) as diffusers writes it, "unet.alpha_pattern"."""
    loaded, _ = sd15
    path = lora_tiny.write_peft_lora(tmp_path / "peft", "StableDiffusionPipeline", TINY_UNET,
                                     {"text_encoder": TINY_TEXT_ENCODER}, diffusers_names=False)
    tensors = load_file(path)
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({
        "unet.lora_alpha": 8, "unet.r": 4, "unet.alpha_pattern": {"attn2.to_k": 2},
        "text_encoder.lora_alpha": 2, "text_encoder.r": 4})}
    save_file(tensors, str(tmp_path / "pattern.safetensors"), metadata=metadata)
    layers = read_lora(tmp_path / "pattern.safetensors").layers
    assert layers["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k"].alpha == 2.0
    assert layers["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_q"].alpha == 8.0
    assert layers["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_k"].alpha == 8.0
    assert layers["text_encoder.encoder.layers.0.mlp.fc1"].alpha == 2.0


@pytest.mark.parametrize("naming", ["ldm", "diffusers"])
def test_kohya_sdxl_lora_equals_diffusers(sdxl, sdxl_config, tmp_path, naming):
    from diffusers import StableDiffusionXLPipeline

    loaded, checkpoint = sdxl
    layers = lora_tiny.sdxl_kohya_layers(naming, convs=True)
    if naming == "ldm":
        assert "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k" in layers
        assert "lora_unet_output_blocks_0_0_in_layers_2" in layers
    else:
        assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k" in layers
    assert "lora_te1_text_model_encoder_layers_2_mlp_fc2" in layers
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" in layers
    path = lora_tiny.write_kohya_lora(tmp_path / "sdxl.safetensors", layers, seed=7)
    pipe = pipeline(StableDiffusionXLPipeline, checkpoint, sdxl_config)
    changed = diffusers_fuse(pipe, path, {"unet": 0.8, "text_encoder": 1.2, "text_encoder_2": 1.2})
    patches, report = our_patches(loaded, path, 0.8, 1.2)
    # Every layer of the file applies: 3 text layers x 6 projections per encoder.
    assert sum(report.applied.values()) == len(layers) and not report.skipped
    assert report.applied["clip_l"] == report.applied["clip_g"] == 18
    compare_with_diffusers(loaded, pipe, patches, report, changed,
                           {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}, sdxl=True)


def test_peft_sdxl_lora_equals_diffusers(sdxl, sdxl_config, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    loaded, checkpoint = sdxl
    path = lora_tiny.write_peft_lora(tmp_path / "peft", "StableDiffusionXLPipeline", TINY_SDXL_UNET,
                                     {"text_encoder": TINY_CLIP_L, "text_encoder_2": TINY_CLIP_G},
                                     diffusers_names=False, unet_alpha=2.0, text_alpha=8.0)
    tensors = load_file(path)
    # bigG (CLIPTextModelWithProjection) keeps transformers' text_model; CLIP-L is flat since 5.6.
    assert "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    assert "text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    pipe = pipeline(StableDiffusionXLPipeline, checkpoint, sdxl_config)
    changed = diffusers_fuse(pipe, path, {"unet": 1.5, "text_encoder": 0.5, "text_encoder_2": 0.5})
    patches, report = our_patches(loaded, path, 1.5, 0.5)
    assert not report.skipped and report.applied["clip_l"] == report.applied["clip_g"] == 18
    compare_with_diffusers(loaded, pipe, patches, report, changed,
                           {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}, sdxl=True)


def test_peft_file_names_with_or_without_text_model_reach_the_same_layers(sd15, sdxl, tmp_path):
    """Files saved before transformers 5.6 name CLIP-L `text_encoder.text_model.encoder...`; newer
    ones `text_encoder.encoder...`. Both patch the same weights, on both kinds of CLIP module."""
    for loaded, _ in (sd15, sdxl):
        spec = loaded.family.spec
        prefixes = ["text_encoder"] + (["text_encoder_2"] if len(spec.text_encoders) > 1 else [])
        width = {name: e.config.hidden_size for name, e in loaded.text_encoders.items()}
        results = []
        for inner in ("", "text_model."):
            generator = torch.Generator().manual_seed(1)
            tensors = {}
            for prefix, encoder in zip(prefixes, loaded.text_encoders):
                key = f"{prefix}.{inner}encoder.layers.1.self_attn.v_proj"
                tensors[f"{key}.lora_A.weight"] = torch.randn(4, width[encoder], generator=generator).half()
                tensors[f"{key}.lora_B.weight"] = torch.randn(width[encoder], 4, generator=generator).half()
            save_file(tensors, str(tmp_path / "te.safetensors"))
            patches, report = our_patches(loaded, tmp_path / "te.safetensors")
            assert report.applied == {name: 1 for name in loaded.text_encoders}, inner
            with applied(loaded, patches):
                results.append({name: state(e) for name, e in loaded.text_encoders.items()})
        for name in loaded.text_encoders:
            assert_bitwise_equal(results[0][name], results[1][name], name)
        unset(loaded)


def test_a_peft_dora_layer_is_reported_not_applied_as_a_plain_lora(sd15, tmp_path):
    """peft's DoRA adds `lora_magnitude_vector` to lora_A / lora_B: without it the change is wrong."""
    loaded, _ = sd15
    tensors = lora_tiny.lora_tensors({"unet.mid_block.attentions.0.proj_out": (64, 64, 1, 1),
                                      "unet.mid_block.attentions.0.proj_in": (64, 64, 1, 1)}, 2, alpha=None)
    tensors = {k.replace(".lora_down.", ".lora_A.").replace(".lora_up.", ".lora_B."): v for k, v in tensors.items()}
    tensors["unet.mid_block.attentions.0.proj_out.lora_magnitude_vector"] = torch.ones(64, dtype=torch.float16)
    _, report = our_patches(loaded, lora_tiny.save_lora(tmp_path / "dora.safetensors", tensors))
    assert report.applied == {"unet": 1}
    assert report.skipped == {"unet.mid_block.attentions.0.proj_out": "DoRA layers are not supported"}


def test_the_sdxl_refiner_takes_text_encoder_2_and_lora_te_for_its_bigg(family_checkpoints, tmp_path):
    """The refiner's only text encoder is bigG: diffusers' text_encoder_2, kohya's lora_te_."""
    from conftest import SDXL_REFINER_NAME

    loaded = load_checkpoint(family_checkpoints[SDXL_REFINER_NAME])
    layers = {"text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj": (128, 128),
              "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": (64, 64),
              "lora_te_text_model_encoder_layers_1_mlp_fc1": (512, 128),
              "lora_unet_input_blocks_4_1_proj_in": (128, 128)}
    path = lora_tiny.save_lora(tmp_path / "refiner.safetensors", lora_tiny.lora_tensors(layers, 9))
    _, report = our_patches(loaded, path)
    assert report.applied == {"clip_g": 2, "unet": 1}
    assert report.skipped == {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj":
                              "a text encoder this family does not have"}


# ---------------------------------------------------------------------------------------------
# LyCORIS and Tucker LoCon against the formulas


def expected_delta(tensors: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """The weight change at strength 1 of one layer, from its tensors (float64), written out
    independently of nodes/sd/lora.py: LoRA / LoCon (with Tucker mid), LoHa (with Tucker), LoKr."""
    t = {k: v.double() for k, v in tensors.items()}
    out, inp, *kernel = shape
    alpha = t["alpha"].item() if "alpha" in t else None
    if "lora_up" in t:
        up, down = t["lora_up"], t["lora_down"]
        rank = down.shape[0]
        if "lora_mid" in t:  # W[o, i, h, w] = sum_ab up[o, a] mid[a, b, h, w] down[b, i]
            delta = torch.einsum("oa,abhw,bi->oihw", up[:, :, 0, 0], t["lora_mid"], down[:, :, 0, 0])
        elif kernel:  # LoCon: a k x k down conv, a 1 x 1 up conv
            delta = torch.einsum("oa,aihw->oihw", up[:, :, 0, 0], down)
        else:
            delta = up @ down
        return delta * (alpha / rank if alpha is not None else 1.0)
    if "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]

        def factor(i: int) -> torch.Tensor:
            a, b = t[f"hada_w{i}_a"], t[f"hada_w{i}_b"]
            if f"hada_t{i}" in t:  # W[o, i, h, w] = sum_ab t[a, b, h, w] a[a, o] b[b, i]
                return torch.einsum("abhw,ao,bi->oihw", t[f"hada_t{i}"], a, b)
            return (a @ b).reshape(shape)

        return factor(1) * factor(2) * alpha / rank
    # LoKr: W[o, i, ...] = w1[o // p, i // q] * w2[o % p, i % q, ...] with w2 [p, q(, k, k)]
    rank = None
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
    else:
        w1, rank = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
    a, b = w1.shape
    p, q = out // a, inp // b
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    elif "lokr_t2" in t:
        w2, rank = torch.einsum("abhw,ap,bq->pqhw", t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"]), t["lokr_w2_b"].shape[0]
    else:
        w2, rank = (t["lokr_w2_a"] @ t["lokr_w2_b"]).reshape(p, q, *kernel), t["lokr_w2_b"].shape[0]
    big1 = w1.repeat_interleave(p, 0).repeat_interleave(q, 1).reshape(out, inp, *([1] * len(kernel)))
    big2 = w2.repeat(a, b, *([1] * len(kernel)))
    scale = alpha / rank if (rank is not None and alpha is not None) else 1.0
    return big1 * big2 * scale


def split_layers(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, role = key.partition(".")
        layers.setdefault(name, {})[role.removesuffix(".weight")] = value
    return layers


def kohya_weight(kohya_name: str, unet: Mapping[str, torch.Tensor], text: Mapping[str, Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """The weight a kohya layer name means: from a U-Net state dict in diffusers' names (ours,
    through diffusers' converter) or from a text encoder's state dict (transformers' names) by
    kohya's prefix (text: our encoder name -> its state dict)."""
    for prefix, encoder in (("lora_te_text_model_", "clip_l"), ("lora_te_text_model_", "openclip_h"),
                            ("lora_te1_text_model_", "clip_l"), ("lora_te2_text_model_", "clip_g")):
        if kohya_name.startswith(prefix) and encoder in text:
            names = {k.removeprefix("text_model.").replace(".", "_"): k for k in text[encoder]}
            return text[encoder][names[kohya_name[len(prefix):] + "_weight"]]
    names = {k.replace(".", "_"): k for k in unet}
    return unet[names[kohya_name.removeprefix("lora_unet_") + "_weight"]]


LYCORIS_CASES = {
    "locon-tucker": lambda layers: lora_tiny.lora_tensors(layers, 11, tucker=True),
    "loha": lambda layers: lora_tiny.loha_tensors(layers, 12),
    "loha-tucker": lambda layers: lora_tiny.loha_tensors(layers, 13, tucker=True),
    "lokr": lambda layers: lora_tiny.lokr_tensors(layers, 14),
    "lokr-full-decomposition": lambda layers: lora_tiny.lokr_tensors(layers, 15, decompose_w1=True),
    "lokr-whole-w2": lambda layers: lora_tiny.lokr_tensors(layers, 16, decompose_w2=False),
    "lokr-tucker": lambda layers: lora_tiny.lokr_tensors(layers, 17, tucker=True),
}


@pytest.mark.parametrize("case", list(LYCORIS_CASES))
def test_lycoris_and_tucker_layers_add_the_formula_delta(sd15, tmp_path, case):
    loaded, _ = sd15
    layers = lora_tiny.sd15_kohya_layers(convs=True)
    tensors = LYCORIS_CASES[case](layers)
    if case == "lokr-whole-w2":  # LyCORIS stores alpha = dim when neither factor is decomposed: scale 1
        tensors.update({f"{name}.alpha": torch.tensor(4.0, dtype=torch.float16) for name in layers})
    path = lora_tiny.save_lora(tmp_path / f"{case}.safetensors", tensors)
    config = unet_config(TINY_UNET)
    base_unet, base_text = unet_in_diffusers_names(loaded.unet, config), {"clip_l": state(loaded.text_encoders["clip_l"])}
    strength_model, strength_clip = 0.75, -1.5
    patches, report = our_patches(loaded, path, strength_model, strength_clip)
    assert report.applied == {"unet": 64, "clip_l": 12} and not report.skipped
    with applied(loaded, patches):
        patched_unet, patched_text = unet_in_diffusers_names(loaded.unet, config), {"clip_l": state(loaded.text_encoders["clip_l"])}
    worst, smallest_change = 0.0, float("inf")
    for name, layer in split_layers(tensors).items():
        strength = strength_clip if name.startswith("lora_te") else strength_model
        base = kohya_weight(name, base_unet, base_text).double()
        ours = kohya_weight(name, patched_unet, patched_text)
        worst = max(worst, relative_error(ours, base + strength * expected_delta(layer, layers[name])))
        smallest_change = min(smallest_change, ((ours.double() - base).abs().max() / base.abs().max()).item())
    print(f"{case}: max error {worst:.3g}, smallest change {smallest_change:.3g} of the weight")
    assert worst <= WEIGHT_TOL
    assert smallest_change > 1e-3  # every layer really changes
    unset(loaded)


def test_sd2_kohya_lora_patches_unet_and_the_open_clip_tower_by_the_formula(family_checkpoints, tmp_path):
    """SD2.x: the text encoder is stored in OpenCLIP's layout (packed q/k/v), kohya names it
    like transformers' CLIP; base weights restore exactly from the packed tensors."""
    checkpoint = family_checkpoints[SD2_BASE_NAME]
    loaded = load_checkpoint(checkpoint)
    fresh = {"unet": state(loaded.unet), "openclip_h": state(loaded.text_encoders["openclip_h"])}
    layers = lora_tiny.sd2_kohya_layers()
    tensors = lora_tiny.lora_tensors(layers, 21)
    path = lora_tiny.save_lora(tmp_path / "sd2.safetensors", tensors)
    patches, report = our_patches(loaded, path, 1.0, 0.5)
    assert report.applied == {"unet": len(layers) - 18, "openclip_h": 18} and not report.skipped
    config = unet_config(TINY_SD2_UNET)
    base_unet = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in fresh["unet"].items()}, config)
    encoder = loaded.text_encoders["openclip_h"]
    with applied(loaded, patches):
        patched_unet, patched_text = unet_in_diffusers_names(loaded.unet, config), {"openclip_h": state(encoder)}
    for name, layer in split_layers(tensors).items():
        strength = 0.5 if name.startswith("lora_te_") else 1.0
        expected = kohya_weight(name, base_unet, fresh).double() + strength * expected_delta(layer, layers[name])
        assert relative_error(kohya_weight(name, patched_unet, patched_text), expected) <= WEIGHT_TOL, name
    unset(loaded)
    assert_bitwise_equal(state(loaded.unet), fresh["unet"], "unet")
    assert_bitwise_equal(state(encoder), fresh["openclip_h"], "openclip_h")


# ---------------------------------------------------------------------------------------------
# Strength 0, restore, chaining


def test_strength_zero_and_removal_give_the_base_weights_bit_for_bit(sd15, sdxl, tmp_path):
    for (loaded, checkpoint), layers in ((sd15, lora_tiny.sd15_kohya_layers(convs=True)),
                                         (sdxl, lora_tiny.sdxl_kohya_layers(convs=True))):
        fresh = load_checkpoint(checkpoint)
        modules = {"unet": loaded.unet, **loaded.text_encoders}
        base = {"unet": state(fresh.unet), **{n: state(e) for n, e in fresh.text_encoders.items()}}
        path = lora_tiny.write_kohya_lora(tmp_path / "lora.safetensors", layers)
        patches, _ = our_patches(loaded, path)
        unet_patch = next(p for p in patches if p.target == "unet")
        with applied(loaded, patches):
            for key in unet_patch.deltas:
                assert not torch.equal(loaded.unet.state_dict()[key], base["unet"][key]), key
        assert all(isinstance(patch_state(m).base, FileWeights) for m in modules.values())
        zero, _ = our_patches(loaded, path, 0.0, 0.0)
        with applied(loaded, zero):  # after a patched state: read back from the file
            for name, module in modules.items():
                assert_bitwise_equal(state(module), base[name], f"{name} at strength 0")
        with applied(loaded, patches):
            pass
        unset(loaded)  # removed
        for name, module in modules.items():
            assert_bitwise_equal(state(module), base[name], f"{name} after removal")
            assert patch_state(module).touched == frozenset()


def test_an_fp16_checkpoint_loaded_as_fp32_restores_exactly(tmp_path):
    from sd_tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "half.safetensors", dtype=torch.float16)
    loaded, fresh = load_checkpoint(checkpoint), load_checkpoint(checkpoint)
    assert next(loaded.unet.parameters()).dtype == torch.float32
    path = lora_tiny.write_kohya_lora(tmp_path / "lora.safetensors", lora_tiny.sd15_kohya_layers(convs=True))
    patches, _ = our_patches(loaded, path)
    with applied(loaded, patches):
        pass
    unset(loaded)
    assert_bitwise_equal(state(loaded.unet), state(fresh.unet), "unet")
    assert_bitwise_equal(state(loaded.text_encoders["clip_l"]), state(fresh.text_encoders["clip_l"]), "clip_l")


def test_two_loras_add_their_deltas_and_one_lora_twice_doubles_it(sd15, tmp_path):
    loaded, _ = sd15
    base = state(loaded.unet)
    base_text = state(loaded.text_encoders["clip_l"])
    layers = lora_tiny.sd15_kohya_layers(convs=True)
    first = lora_tiny.write_kohya_lora(tmp_path / "first.safetensors", layers, seed=1)
    # The second overlaps the first on the attention layers only (no convs) and has another rank.
    second = lora_tiny.write_kohya_lora(tmp_path / "second.safetensors", lora_tiny.sd15_kohya_layers(), seed=2,
                                        rank=4, alpha=1.0)
    a, _ = our_patches(loaded, first, 0.8, 0.6)
    b, _ = our_patches(loaded, second, -0.4, 1.1)

    def weights(patches) -> dict[str, dict[str, torch.Tensor]]:
        with applied(loaded, patches):
            return {"unet": state(loaded.unet), "clip_l": state(loaded.text_encoders["clip_l"])}

    only_a, only_b, both = weights(a), weights(b), weights(a + b)
    for target, start in (("unet", base), ("clip_l", base_text)):
        for key, value in start.items():
            summed = only_a[target][key] - value + only_b[target][key] - value
            scale = value.abs().max().item() or 1.0
            assert (both[target][key] - value - summed).abs().max().item() <= 1e-6 * scale, key
    # Order does not matter beyond rounding; the same LoRA twice is one at twice the strength.
    reverse = weights(b + a)
    twice = weights(our_patches(loaded, first, 0.4, 0.3)[0] * 2)
    for target in ("unet", "clip_l"):
        for key, value in both[target].items():
            assert torch.allclose(reverse[target][key], value, rtol=0, atol=1e-6 * value.abs().max().item() + 1e-12)
            assert torch.allclose(twice[target][key], only_a[target][key], rtol=0,
                                  atol=1e-6 * value.abs().max().item() + 1e-12)
    unset(loaded)


def test_a_file_that_names_one_module_twice_applies_it_once_and_says_so(sd15, tmp_path):
    """The same layer under kohya's diffusers name and its LDM name: applied once, the other
    reported (adding both would double it; dropping one silently would misreport)."""
    loaded, _ = sd15
    layers = {"lora_unet_mid_block_attentions_0_proj_in": (64, 64, 1, 1),
              "lora_unet_middle_block_1_proj_in": (64, 64, 1, 1)}
    path = lora_tiny.save_lora(tmp_path / "twice.safetensors", lora_tiny.lora_tensors(layers, 3))
    _, report = our_patches(loaded, path)
    assert report.applied == {"unet": 1}
    assert report.skipped == {"lora_unet_middle_block_1_proj_in":
                              "patches the same layer as lora_unet_mid_block_attentions_0_proj_in"}


# ---------------------------------------------------------------------------------------------
# Base weights: pickle checkpoints, changed files


def test_a_pickle_checkpoint_restores_from_backups(tiny_sd15_checkpoint, tmp_path):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(tiny_sd15_checkpoint)}, ckpt)
    loaded = load_checkpoint(ckpt, allow_pickle=True)
    fresh = load_checkpoint(tiny_sd15_checkpoint)
    path = lora_tiny.write_kohya_lora(tmp_path / "lora.safetensors", lora_tiny.sd15_kohya_layers(convs=True))
    patches, _ = our_patches(loaded, path)
    with applied(loaded, patches):
        assert not torch.equal(loaded.unet.state_dict()["middle_block.1.proj_in.weight"],
                               fresh.unet.state_dict()["middle_block.1.proj_in.weight"])
    backups = patch_state(loaded.unet).base
    assert isinstance(backups, BackupWeights)
    unet_patch = next(p for p in patches if p.target == "unet")
    assert backups.nbytes == sum(fresh.unet.get_parameter(name).numel() * 4 for name in unet_patch.deltas)
    unset(loaded)
    assert_bitwise_equal(state(loaded.unet), state(fresh.unet), "unet")
    assert_bitwise_equal(state(loaded.text_encoders["clip_l"]), state(fresh.text_encoders["clip_l"]), "clip_l")


def test_a_checkpoint_changed_on_disk_cannot_be_restored(tiny_sd15_checkpoint, tmp_path):
    checkpoint = shutil.copy(tiny_sd15_checkpoint, tmp_path / "model.safetensors")
    loaded = load_checkpoint(checkpoint)
    path = lora_tiny.write_kohya_lora(tmp_path / "lora.safetensors", lora_tiny.sd15_kohya_layers())
    patches, _ = our_patches(loaded, path)
    with applied(loaded, patches):
        pass
    stat = os.stat(checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(PatchError, match=r"^model\.safetensors changed on disk since it was loaded, so its weights "
                                         r"cannot be restored after a LoRA: load the checkpoint again$"):
        unset(loaded)
    os.remove(checkpoint)
    with pytest.raises(PatchError, match=r"model\.safetensors is gone .*load the checkpoint again"):
        unset(loaded)


# ---------------------------------------------------------------------------------------------
# Through the executor


def shipped_lora(**overrides) -> dict:
    """workflows/lora.json, small (64x64, 4 steps), with inputs overridden ("node.input": value)."""
    document = json.loads((ROOT / "workflows" / "lora.json").read_text())
    settings = {"latent.width": 64, "latent.height": 64, "sampler.steps": 4}
    settings.update(overrides)
    for key, value in settings.items():
        node_id, name = key.split(".")
        document["nodes"][node_id]["inputs"][name] = value
    return document


def without_lora(document: dict) -> dict:
    """The same workflow with the LoRA node taken out (its readers take the checkpoint's outputs)."""
    document = json.loads(json.dumps(document))
    del document["nodes"]["lora"]
    document["ui"].pop("lora", None)
    for node in document["nodes"].values():
        for value in node["inputs"].values():
            if isinstance(value, dict) and value.get("node") == "lora":
                value["node"] = "checkpoint"
    return document


@pytest.fixture
def lora_folders(sd_folders, tiny_sd15_checkpoint):
    """sd_folders with the tiny SD1.x checkpoint also under lora.json's name and its example LoRA
    (kohya LoCon) in models/loras."""
    os.link(tiny_sd15_checkpoint, sd_folders.models / "checkpoints" / SD15_WORKFLOW_CHECKPOINT)
    lora_tiny.write_kohya_lora(sd_folders.models / "loras" / EXAMPLE_LORA, lora_tiny.sd15_kohya_layers(convs=True))
    return sd_folders


def executor_for(folders, allow_pickle: bool = False):
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.services import Services

    return Executor(registry, OutputCache(1 << 30), services=Services(folders=folders, allow_pickle=allow_pickle),
                    events=EventBus())


@pytest.fixture
def lora_executor(lora_folders):
    return executor_for(lora_folders)


def run(executor, document: dict, outputs: list[str] | None = None):
    result = executor.run(document, outputs=outputs)
    assert result.ok, result.errors
    return result


def failure(executor, document: dict) -> tuple[str, str]:
    result = executor.run(document)
    assert result.status == "failed" and len(result.errors) == 1, result.errors
    return result.errors[0].node_id, str(result.errors[0].error)


EXAMPLE_SUMMARY = {"name": EXAMPLE_LORA, "applied": {"unet": 64, "clip_l": 12}, "skipped": 0,
                   "skipped_reasons": {}, "skipped_layers": []}


def test_the_shipped_lora_workflow_runs_and_strength_zero_is_the_plain_image(lora_executor, lora_folders):
    document = shipped_lora()
    assert document["nodes"]["checkpoint"]["inputs"]["checkpoint"] == SD15_WORKFLOW_CHECKPOINT
    assert document["nodes"]["lora"]["inputs"]["lora_name"] == EXAMPLE_LORA
    result = run(lora_executor, document, ["sampler", "decode", "save"])
    assert set(result.executed) == {"checkpoint", "lora", "positive", "negative", "latent", "sampler", "decode", "save"}
    assert result.results["lora"] == {"lora": EXAMPLE_SUMMARY}
    assert result.results["save"]["images"][0]["filename"] == "lora_00001_.png"
    with_lora = result.values["decode"]["image"]

    plain = run(lora_executor, without_lora(document), ["sampler", "decode"]).values
    zero = run(lora_executor, shipped_lora(**{"lora.strength_model": 0.0, "lora.strength_clip": 0.0}),
               ["sampler", "decode"]).values
    assert torch.equal(zero["sampler"]["latent"].samples, plain["sampler"]["latent"].samples)
    assert torch.equal(zero["decode"]["image"], plain["decode"]["image"])
    assert (with_lora - plain["decode"]["image"]).abs().mean() > 0.01  # the LoRA shows in the image


def test_removing_the_lora_restores_every_weight_and_the_plain_image(lora_executor, tiny_sd15_checkpoint):
    document = shipped_lora()
    plain = run(lora_executor, without_lora(document), ["checkpoint", "sampler"]).values
    run(lora_executor, document)
    lora_executor.cache.clear()  # so the plain run samples again, on the restored weights
    again = run(lora_executor, without_lora(document), ["checkpoint", "sampler"]).values
    assert torch.equal(again["sampler"]["latent"].samples, plain["sampler"]["latent"].samples)
    fresh = load_checkpoint(tiny_sd15_checkpoint)
    assert_bitwise_equal(state(again["checkpoint"]["model"].unet), state(fresh.unet), "unet")
    assert_bitwise_equal(state(again["checkpoint"]["clip"].model), state(fresh.text_encoders["clip_l"]), "clip_l")
    assert lora_executor.services.models.loads == 2  # the checkpoint and the LoRA file, once each


def test_a_strength_sweep_loads_once_and_reruns_the_sampler(lora_executor):
    images = []
    for strength in (0.5, 1.0, 1.5):
        result = run(lora_executor, shipped_lora(**{"lora.strength_model": strength}), ["decode", "save"])
        images.append(result.values["decode"]["image"])
        if strength == 0.5:
            continue
        # The node's text encoder output depends on its clip input, file and strength_clip only:
        # a new U-Net strength does not encode the prompts again.
        assert result.executed == ["lora", "sampler", "decode", "save"]
        assert set(result.cached) == {"checkpoint", "latent", "positive", "negative"}
    assert lora_executor.services.models.loads == 2  # the checkpoint and the LoRA file, once each
    assert (images[0] - images[1]).abs().mean() > 1e-3 and (images[1] - images[2]).abs().mean() > 1e-3

    # A new text encoder strength encodes the prompts again (the model's patches are the same).
    result = run(lora_executor, shipped_lora(**{"lora.strength_model": 1.5, "lora.strength_clip": 0.5}), ["decode"])
    assert result.executed == ["lora", "positive", "negative", "sampler", "decode"]
    # Only the seed changes: only the sampler and what follows re-run.
    result = run(lora_executor, shipped_lora(**{"lora.strength_model": 1.5, "lora.strength_clip": 0.5,
                                                "sampler.seed": 7}), ["decode"])
    assert result.executed == ["sampler", "decode"]
    assert lora_executor.services.models.loads == 2


def test_chained_lora_nodes_add_up(lora_executor):
    document = shipped_lora(**{"lora.strength_model": 0.5, "lora.strength_clip": 0.5})
    document["nodes"]["lora2"] = {"type": "lora_loader", "inputs": {
        "model": {"node": "lora", "output": "model"}, "clip": {"node": "lora", "output": "clip"},
        "lora_name": EXAMPLE_LORA, "strength_model": 0.5, "strength_clip": 0.5}}
    for name in ("positive", "negative"):
        document["nodes"][name]["inputs"]["clip"] = {"node": "lora2", "output": "clip"}
    document["nodes"]["sampler"]["inputs"]["model"] = {"node": "lora2", "output": "model"}
    chained = run(lora_executor, document, ["lora2", "sampler"]).values
    assert len(chained["lora2"]["model"].patches) == 2 and len(chained["lora2"]["clip"].patches) == 2
    single = run(lora_executor, shipped_lora(), ["sampler"]).values
    ours, theirs = chained["sampler"]["latent"].samples, single["sampler"]["latent"].samples
    assert relative_error(ours, theirs) <= OUTPUT_TOL


def test_the_report_lists_what_was_skipped_and_why(lora_folders):
    good = lora_tiny.lora_tensors(lora_tiny.sd15_kohya_layers(), 4)
    bogus = {
        **lora_tiny.lora_tensors({"lora_unet_down_blocks_9_attentions_0_proj_in": (64, 64, 1, 1),
                                  "lora_te2_text_model_encoder_layers_0_mlp_fc1": (256, 64)}, 5),
        # the mid-block proj_in is 64 -> 64; this one was made for 32 inputs
        **lora_tiny.lora_tensors({"lora_unet_mid_block_attentions_0_proj_in": (64, 32, 1, 1)}, 6),
        "lora_unet_up_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(8, 64, 1, 1, dtype=torch.float16),
        "lora_unet_up_blocks_0_attentions_1_proj_in.lora_down.weight": torch.zeros(8, 64, 1, 1, dtype=torch.float16),
        "lora_unet_up_blocks_0_attentions_1_proj_in.lora_up.weight": torch.zeros(64, 8, 1, 1, dtype=torch.float16),
        "lora_unet_up_blocks_0_attentions_1_proj_in.dora_scale": torch.ones(64, 1, 1, 1, dtype=torch.float16),
        "lora_unet_up_blocks_0_attentions_1_proj_out.some_new_thing": torch.ones(3),
        "version": torch.ones(1),
    }
    for name in ("mid_block_attentions_0_proj_in", "up_blocks_0_attentions_0_proj_in", "up_blocks_0_attentions_1_proj_in"):
        good = {k: v for k, v in good.items() if not k.startswith(f"lora_unet_{name}.")}
    lora_tiny.save_lora(lora_folders.models / "loras" / "messy.safetensors", {**good, **bogus})
    executor = executor_for(lora_folders)
    result = run(executor, shipped_lora(**{"lora.lora_name": "messy.safetensors"}), ["lora"])
    shape = ("shape mismatch: the model's weight is [64, 64, 1, 1], the file's layer has "
             "down [8, 32, 1, 1], up [64, 8, 1, 1]")
    assert result.results["lora"] == {"lora": {
        "name": "messy.safetensors",
        "applied": {"unet": 48 - 3, "clip_l": 12},
        "skipped": 5,
        "skipped_reasons": {"no such layer": 1, "a text encoder this family does not have": 1, shape: 1,
                            "incomplete tensors": 1, "DoRA layers are not supported": 1},
        "skipped_layers": ["lora_te2_text_model_encoder_layers_0_mlp_fc1", "lora_unet_down_blocks_9_attentions_0_proj_in",
                           "lora_unet_mid_block_attentions_0_proj_in", "lora_unet_up_blocks_0_attentions_0_proj_in",
                           "lora_unet_up_blocks_0_attentions_1_proj_in"],
        "unread_keys": 2,
        "unread_examples": ["lora_unet_up_blocks_0_attentions_1_proj_out.some_new_thing", "version"],
    }}


def test_files_that_are_no_lora_for_this_model_fail_with_clear_messages(lora_folders, tiny_sd15_checkpoint, tmp_path):
    loras = lora_folders.models / "loras"
    os.link(tiny_sd15_checkpoint, loras / "actually_a_checkpoint.safetensors")
    lora_tiny.write_kohya_lora(loras / "sdxl_lora.safetensors", lora_tiny.sdxl_kohya_layers("ldm"))
    lora_tiny.write_kohya_lora(loras / "sdxl_diffusers_names.safetensors", lora_tiny.sdxl_kohya_layers("diffusers"))
    lora_tiny.save_lora(loras / "strange.safetensors", lora_tiny.lora_tensors(
        {"lora_unet_foo_bar": (64, 64), "transformer.blocks.0.attn.qkv": (192, 64)}, 8))
    lora_tiny.save_lora(loras / "sdxl_text_only.safetensors", lora_tiny.lora_tensors(
        {"lora_te2_text_model_encoder_layers_0_mlp_fc1": (512, 128)}, 9))
    torch.save(lora_tiny.lora_tensors(lora_tiny.sd15_kohya_layers(), 4), loras / "old.pt")
    executor = executor_for(lora_folders)

    def message(name: str) -> str:
        node, text = failure(executor, shipped_lora(**{"lora.lora_name": name}))
        assert node == "lora"
        return text

    assert message("actually_a_checkpoint.safetensors") == (
        "actually_a_checkpoint.safetensors is not a LoRA: it looks like a Stable Diffusion checkpoint (it holds a "
        "whole U-Net, model.diffusion_model.*); put it in models/checkpoints and load it with the checkpoint loader")
    for name in ("sdxl_lora.safetensors", "sdxl_diffusers_names.safetensors"):
        assert message(name).startswith(
            f"{name} does not fit this Stable Diffusion 1.x model: its layers have other shapes (is it a LoRA for "
            "another family?); for example shape mismatch: the model's weight is ")
    assert message("strange.safetensors") == (
        "none of the 2 layers of strange.safetensors matches a layer of this Stable Diffusion 1.x model (layers such "
        "as lora_unet_foo_bar, transformer.blocks.0.attn.qkv); it may be for another model family or a format this "
        "version does not read")
    assert message("sdxl_text_only.safetensors") == (
        "sdxl_text_only.safetensors only patches text encoders this Stable Diffusion 1.x model does not have "
        "(layers such as lora_te2_text_model_encoder_layers_0_mlp_fc1)")
    assert message("old.pt").startswith(
        "old.pt is a pickle checkpoint (.pt). Pickle files can run arbitrary code when loaded, so they are refused "
        "by default")

    # With allow_pickle the .pt file reads (weights only) and gives what the same tensors give as safetensors.
    lora_tiny.save_lora(loras / "same.safetensors", torch.load(loras / "old.pt", weights_only=True))
    trusting = executor_for(lora_folders, allow_pickle=True)
    from_pickle = run(trusting, shipped_lora(**{"lora.lora_name": "old.pt"}), ["sampler"])
    from_safetensors = run(trusting, shipped_lora(**{"lora.lora_name": "same.safetensors"}), ["sampler"])
    assert from_pickle.results["lora"]["lora"]["applied"] == {"unet": 48, "clip_l": 12}
    assert torch.equal(from_pickle.values["sampler"]["latent"].samples, from_safetensors.values["sampler"]["latent"].samples)


def test_a_lora_name_outside_the_loras_folder_is_refused(lora_executor, lora_folders):
    from latentgraph.engine import WorkflowInvalid
    from latentgraph.nodes.folders import UnsafeName

    with pytest.raises(WorkflowInvalid) as caught:
        lora_executor.run(shipped_lora(**{"lora.lora_name": "../checkpoints/" + DEMO_NAME}))
    issue = caught.value.issues[0]
    assert (issue.node, issue.input, issue.code) == ("lora", "lora_name", "not_in_choices")
    assert f"'{EXAMPLE_LORA}'" in issue.message
    with pytest.raises(UnsafeName):
        lora_folders.model_path("loras", "../checkpoints/" + DEMO_NAME)


def test_the_model_only_loader_leaves_the_text_encoder_alone(lora_executor):
    document = shipped_lora()
    document["nodes"]["lora"] = {"type": "lora_loader_model_only", "inputs": {
        "model": {"node": "checkpoint", "output": "model"}, "lora_name": EXAMPLE_LORA, "strength_model": 1.0}}
    for name in ("positive", "negative"):
        document["nodes"][name]["inputs"]["clip"] = {"node": "checkpoint", "output": "clip"}
    model_only = run(lora_executor, document, ["lora", "positive", "sampler"])
    assert model_only.results["lora"] == {"lora": {"name": EXAMPLE_LORA, "applied": {"unet": 64}, "left_out": {"clip_l": 12},
                                                   "skipped": 0, "skipped_reasons": {}, "skipped_layers": []}}
    clip_only_zero = run(lora_executor, shipped_lora(**{"lora.strength_clip": 0.0}), ["positive", "sampler"]).values
    plain = run(lora_executor, without_lora(shipped_lora()), ["checkpoint", "positive"]).values
    assert torch.equal(model_only.values["positive"]["conditioning"].entries[0].embedding,
                       plain["positive"]["conditioning"].entries[0].embedding)
    assert torch.equal(model_only.values["sampler"]["latent"].samples, clip_only_zero["sampler"]["latent"].samples)
    assert patch_state(plain["checkpoint"]["clip"].model).touched == frozenset()


def test_a_checkpoint_touched_after_a_lora_run_is_loaded_again(lora_executor, lora_folders):
    document = shipped_lora()
    plain = run(lora_executor, without_lora(document), ["sampler"]).values["sampler"]["latent"].samples
    run(lora_executor, document, ["sampler"])
    path = lora_folders.models / "checkpoints" / SD15_WORKFLOW_CHECKPOINT
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = run(lora_executor, without_lora(document), ["sampler"])
    assert "checkpoint" in again.executed and lora_executor.services.models.loads == 3
    assert torch.equal(again.values["sampler"]["latent"].samples, plain)
