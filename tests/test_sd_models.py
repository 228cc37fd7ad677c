"""The SD model code against diffusers/transformers on the same weights, and the loader's contract.

References are built from the tiny LDM checkpoint by diffusers' own single-file conversion
functions (no network: the "original config" they need is written out here), so a wrong key,
transposed shape or misplaced norm on our side shows up as a numeric mismatch.

Tolerances: everything runs in float32. Our modules and the references do the same arithmetic in
a different order (attention reshapes, GroupNorm kernels, fused vs separate q/k/v, conv
algorithms), which moves results by float32 rounding, ~1e-6 of the output's scale. We allow
1e-4 of the output's largest magnitude (at least 1): two orders of magnitude of headroom for
rounding, while any real mistake (a swapped weight, an off-by-one block, the wrong head count)
moves outputs by far more than 1%.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
from dataclasses import replace
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from latentgraph.nodes.sd import checkpoint as checkpoint_module
from latentgraph.nodes.sd.checkpoint import CheckpointError, load_checkpoint, load_vae, save_checkpoint
from latentgraph.nodes.sd.families import SD1, SD2, SDXL, SDXL_REFINER, detect_family
from latentgraph.nodes.sd.layout import SCALING_FACTOR_METADATA_KEY, UNET_PREFIX, VAE_PREFIX
from latentgraph.nodes.sd.text_encoder import TextEncoderConfig, build_text_encoder
from latentgraph.nodes.sd.text_encoder import file_key as clip_file_key
from latentgraph.nodes.sd.unet import UNetConfig, UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL, VAEConfig, decode_from_latent, decode_tiled, encode_to_latent
from latentgraph.nodes.sd.layout import ldm_original_config
from sd_tiny import (TINY_TEXT_ENCODER, TINY_UNET, TINY_VAE, randomize_, text_encoder_shapes, write_tiny_checkpoint,
                     write_tiny_sd2_checkpoint)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

RELATIVE_TOLERANCE = 1e-4


def assert_close(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Assert |ours - reference| <= 1e-4 * max(1, max |reference|); return the max abs error."""
    assert ours.shape == reference.shape
    scale = max(1.0, reference.abs().max().item())
    error = (ours - reference).abs().max().item()
    assert error <= RELATIVE_TOLERANCE * scale, f"max error {error:.3g} exceeds {RELATIVE_TOLERANCE} x {scale:.3g}"
    return error


def original_config(unet: UNetConfig, vae=TINY_VAE) -> dict:
    return ldm_original_config(unet, vae)


def diffusers_unet(state: dict[str, torch.Tensor], unet: UNetConfig) -> UNet2DConditionModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = create_unet_diffusers_config_from_ldm(original_config(unet), state)
        model = UNet2DConditionModel(**config)
    model.load_state_dict(convert_ldm_unet_checkpoint(state, config), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_state(tiny_sd15_checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(tiny_sd15_checkpoint)


# --- family detection -------------------------------------------------------------------------


def file_shapes(path: Path) -> dict[str, list[int]]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_slice(key).get_shape() for key in handle.keys()}


def test_tiny_checkpoint_is_detected_as_sd1_with_configs_inferred_from_shapes(tiny_sd15_checkpoint):
    family = detect_family(file_shapes(tiny_sd15_checkpoint))
    assert family.name == "sd1"
    assert family.unet == TINY_UNET
    assert family.vae == TINY_VAE
    assert family.text_encoder == TINY_TEXT_ENCODER
    assert family.prediction_type == "epsilon"
    assert family.vae_scaling_factor == 0.18215


def test_prediction_type_of_an_sd1_file_is_the_family_default_unless_given(tiny_sd15_checkpoint):
    assert detect_family(file_shapes(tiny_sd15_checkpoint)).prediction_source == "the family's default"
    family = detect_family(file_shapes(tiny_sd15_checkpoint), prediction_type="v_prediction")
    assert (family.prediction_type, family.prediction_source) == ("v_prediction", "the caller")
    with pytest.raises(ValueError, match="prediction_type"):
        detect_family(file_shapes(tiny_sd15_checkpoint), prediction_type="x0")


def test_metadata_overrides_the_vae_scaling_factor(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "demo.safetensors", metadata={SCALING_FACTOR_METADATA_KEY: "0.5"})
    loaded = load_checkpoint(path)
    assert loaded.family.vae_scaling_factor == 0.5
    assert loaded.vae.config.scaling_factor == 0.5
    assert loaded.metadata[SCALING_FACTOR_METADATA_KEY] == "0.5"


def meta_shapes(unet: UNetConfig, text_encoder: TextEncoderConfig | None = None) -> dict[str, list[int]]:
    """Key -> shape table of full-size models, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        shapes = {UNET_PREFIX + k: list(v.shape) for k, v in UNetModel(unet).state_dict().items()}
        shapes |= {VAE_PREFIX + k: list(v.shape) for k, v in AutoencoderKL(VAEConfig()).state_dict().items()}
        if text_encoder is not None:
            model = build_text_encoder(text_encoder)
            shapes |= {clip_file_key(model, k, SD1.text_encoders[0].prefix): list(v.shape) for k, v in model.state_dict().items()}
    return shapes


SD15_UNET = UNetConfig()  # the defaults are v1-inference.yaml's
SD21_UNET = UNetConfig(num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
SDXL_UNET = UNetConfig(
    channel_mult=(1, 2, 4),
    attention_resolutions=(4, 2),
    transformer_depth=(0, 2, 10),
    num_head_channels=64,
    context_dim=2048,
    use_linear_in_transformer=True,
    adm_in_channels=2816,
)


def test_full_size_sd15_layout_infers_the_published_sd15_configs():
    family = detect_family(meta_shapes(SD15_UNET, TextEncoderConfig()))
    assert (family.name, family.unet, family.vae, family.text_encoder) == (
        "sd1", SD15_UNET, replace(VAEConfig(), scaling_factor=SD1.latent.scaling_factor), TextEncoderConfig()
    )
    assert family.text_encoder.num_heads == 12


# The published text encoders: OpenCLIP ViT-H/14 (SD2.x), CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 (SDXL).
VIT_H = TextEncoderConfig(hidden_size=1024, num_layers=24, intermediate_size=4096, hidden_act="gelu")
VIT_L = TextEncoderConfig()
VIT_BIGG = TextEncoderConfig(hidden_size=1280, num_layers=32, intermediate_size=5120, hidden_act="gelu",
                             projection_dim=1280)
SDXL_REFINER_UNET = UNetConfig(model_channels=384, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2),
                               transformer_depth=4, num_head_channels=64, context_dim=1280,
                               use_linear_in_transformer=True, adm_in_channels=2560)


def test_full_size_sd2_and_sdxl_layouts_infer_their_published_configs():
    sd2 = meta_shapes(SD21_UNET) | text_encoder_shapes(VIT_H, SD2.text_encoders[0].prefix, "open_clip")
    family = detect_family(sd2)
    assert family.name == "sd2" and family.unet == replace(SD21_UNET, upcast_attention=True)
    assert family.text_encoders == (VIT_H,) and family.text_encoders[0].num_heads == 16

    xl_l, xl_g = SDXL.text_encoders
    sdxl = (meta_shapes(SDXL_UNET) | text_encoder_shapes(VIT_L, xl_l.prefix)
            | text_encoder_shapes(VIT_BIGG, xl_g.prefix, "open_clip"))
    family = detect_family(sdxl)
    assert (family.name, family.unet) == ("sdxl", SDXL_UNET)
    assert family.text_encoders == (replace(VIT_L, hidden_act="quick_gelu"), VIT_BIGG)
    assert family.vae_scaling_factor == 0.13025 and family.text_encoders[1].num_heads == 20

    refiner = meta_shapes(SDXL_REFINER_UNET) | text_encoder_shapes(VIT_BIGG, SDXL_REFINER.text_encoders[0].prefix, "open_clip")
    family = detect_family(refiner)
    assert (family.name, family.unet) == ("sdxl_refiner", SDXL_REFINER_UNET)


def test_a_size_vector_that_does_not_fit_the_unet_is_refused():
    xl_l, xl_g = SDXL.text_encoders
    sdxl = (meta_shapes(replace(SDXL_UNET, adm_in_channels=2560)) | text_encoder_shapes(VIT_L, xl_l.prefix)
            | text_encoder_shapes(VIT_BIGG, xl_g.prefix, "open_clip"))
    with pytest.raises(CheckpointError, match=r"label_emb reads 2560 channels but a Stable Diffusion XL conditioning "
                                              r"vector with this text encoder is 2816"):
        detect_family(sdxl, source="mixed.safetensors")


def test_an_incomplete_openclip_text_encoder_is_named(tmp_path):
    path = write_tiny_sd2_checkpoint(tmp_path / "sd2.safetensors")
    tensors = load_file(path)
    del tensors["cond_stage_model.model.ln_final.weight"]
    tensors["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(3, 64)
    save_file(tensors, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "broken.safetensors")
    message = str(error.value)
    assert "text encoder openclip_h: 1 tensor missing: cond_stage_model.model.ln_final.weight" in message
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight [3, 64] (expected [192, 64])" in message


# --- numerics against diffusers / transformers -------------------------------------------------


def test_unet_matches_diffusers_on_the_same_weights(tiny_sd15, tiny_state):
    reference = diffusers_unet(tiny_state, TINY_UNET)
    generator = torch.Generator().manual_seed(1)
    context = torch.randn(2, 77, 64, generator=generator)
    errors = []
    # 15x17 is not a multiple of the U-Net's downsampling: both pick the skip's size on the way up.
    for height, width in [(16, 16), (15, 17)]:
        x = torch.randn(2, 4, height, width, generator=generator)
        for timesteps in ([0.0, 999.0], [250.0, 500.5], [37.0, 37.0]):
            t = torch.tensor(timesteps)
            with torch.no_grad():
                ours = tiny_sd15.unet(x, t, context)
                expected = reference(x, t, encoder_hidden_states=context).sample
            errors.append(assert_close(ours, expected))
    print(f"U-Net max abs error vs diffusers: {max(errors):.2e}")


def test_sd2_style_unet_with_linear_projections_matches_diffusers():
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        transformer_depth=2,
        num_head_channels=16,
        context_dim=48,
        use_linear_in_transformer=True,
    )
    ours = randomize_(UNetModel(config), seed=5).eval()
    state = {"model.diffusion_model." + key: value for key, value in ours.state_dict().items()}
    reference = diffusers_unet(state, config)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 77, 48, generator=generator)
    t = torch.tensor([3.0, 700.0])
    with torch.no_grad():
        assert_close(ours(x, t, context), reference(x, t, encoder_hidden_states=context).sample)


@pytest.fixture(scope="module")
def reference_vae(tiny_state) -> DiffusersAutoencoderKL:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = create_vae_diffusers_config_from_ldm(original_config(TINY_UNET), tiny_state)
        model = DiffusersAutoencoderKL(**config)
    model.load_state_dict(convert_ldm_vae_checkpoint(tiny_state, config), strict=True)
    return model.eval()


def test_vae_decode_and_encode_match_diffusers(tiny_sd15, reference_vae):
    generator = torch.Generator().manual_seed(3)
    latent = torch.randn(2, 4, 8, 12, generator=generator)
    image = torch.rand(2, 3, 64, 96, generator=generator) * 2 - 1
    with torch.no_grad():
        decode_error = assert_close(tiny_sd15.vae.decode(latent), reference_vae.decode(latent).sample)
        ours = tiny_sd15.vae.encode(image)
        expected = reference_vae.encode(image).latent_dist
        encode_error = assert_close(ours.mean, expected.mean)
        assert_close(ours.logvar, expected.logvar)
    print(f"VAE max abs error vs diffusers: decode {decode_error:.2e}, encode mean {encode_error:.2e}")


def test_scaled_latent_helpers_apply_the_scaling_factor(tiny_sd15):
    vae = tiny_sd15.vae
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    latent = encode_to_latent(vae, image)
    with torch.no_grad():
        assert torch.allclose(latent, vae.encode(image).mean * 0.18215)
        assert torch.allclose(decode_from_latent(vae, latent), vae.decode(latent / 0.18215).clamp(-1, 1))
    sampled = encode_to_latent(vae, image, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == latent.shape and not torch.equal(sampled, latent)


def test_text_encoder_matches_transformers_clip(tiny_sd15, tiny_state):
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=1,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        eos_token_id=49407,
    )
    reference = CLIPTextModel(config).eval()
    weights = convert_ldm_clip_checkpoint(tiny_state)
    if not hasattr(reference, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {key.removeprefix("text_model."): value for key, value in weights.items()}
    reference.load_state_dict(weights, strict=True)

    generator = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 49406, (2, 77), generator=generator)
    tokens[:, 0] = 49406
    tokens[0, 9:] = 49407
    tokens[1, 30:] = 49407
    with torch.no_grad():
        expected = reference(tokens)
        ours = tiny_sd15.text_encoder(tokens)
        error = assert_close(ours.last_hidden_state, expected.last_hidden_state)
        assert_close(ours.pooler_output, expected.pooler_output)
    print(f"text encoder max abs error vs transformers: {error:.2e}")


class LocalDecoder(torch.nn.Module):
    """A decoder with no global operation (no GroupNorm, no attention): conv, 8x upsample, conv."""

    config = TINY_VAE

    def __init__(self):
        super().__init__()
        self.conv_latent = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv_image = torch.nn.Conv2d(8, 3, 3, padding=1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        upsampled = torch.nn.functional.interpolate(self.conv_latent(latent), scale_factor=8.0, mode="nearest")
        return self.conv_image(torch.nn.functional.silu(upsampled))


def test_tiled_decode_equals_a_full_decode_when_the_decoder_is_local():
    # Edge effects reach 1 latent pixel + 1 image pixel into a tile; an 8-pixel overlap discards
    # 2 latent pixels at each tile edge, so the blend only mixes correct pixels.
    decoder = randomize_(LocalDecoder(), seed=7)
    latent = torch.randn(2, 4, 40, 56, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        error = (decode_tiled(decoder, latent, tile_size=16, tile_overlap=8) - decoder.decode(latent)).abs().max()
    assert error < 1e-5


def test_tiled_decode_of_the_sd_vae_stays_close_to_a_full_decode(tiny_sd15):
    # SD's VAE is not local: each tile's GroupNorm statistics and mid-block attention see only that
    # tile, so tiles differ from the full decode everywhere, not at the seams. With random weights
    # this is at its worst; the bound pins today's behaviour (observed: mean 0.036, max 0.55 of an
    # output with std 0.51 for 32-pixel tiles overlapping by 16 on a 40x56 latent).
    vae = tiny_sd15.vae
    latent = torch.randn(1, 4, 40, 56, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = vae.decode(latent)
        tiled = decode_tiled(vae, latent, tile_size=32, tile_overlap=16)
    error = (tiled - full).abs()
    print(f"tiled vs full decode: max {error.max():.3g}, mean {error.mean():.3g}, output std {full.std():.3g}")
    assert tiled.shape == full.shape
    assert error.mean() < 0.1 * full.std()
    assert error.max() < 1.5 * full.std()


def test_decode_from_latent_switches_to_tiles_above_the_size_limit(tiny_sd15, monkeypatch):
    from latentgraph.nodes.sd import vae as vae_module

    latent = torch.randn(1, 4, 16, 16) * 0.18215
    monkeypatch.setattr(vae_module, "MAX_UNTILED_LATENT_PIXELS", 15 * 15)
    tiled = decode_from_latent(tiny_sd15.vae, latent, tile_size=8, tile_overlap=4)
    forced = decode_from_latent(tiny_sd15.vae, latent, tiled=True, tile_size=8, tile_overlap=4)
    untiled = decode_from_latent(tiny_sd15.vae, latent, tiled=False)
    assert torch.equal(tiled, forced) and not torch.equal(tiled, untiled)


# --- loading: memory, dtype, round trip ---------------------------------------------------------


def test_half_precision_file_loads_as_float32_on_cpu_through_safe_open(tmp_path, monkeypatch):
    path = write_tiny_checkpoint(tmp_path / "half.safetensors", dtype=torch.float16)
    opened = []
    real_safe_open = checkpoint_module.safe_open

    def spy(*args, **kwargs):
        opened.append(args[0])
        return real_safe_open(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "safe_open", spy)
    loaded = load_checkpoint(path, device="cpu", dtype=torch.float16)
    assert opened == [str(path)]
    for model in (loaded.unet, loaded.vae, loaded.text_encoder):
        tensors = list(model.parameters()) + list(model.buffers())
        assert all(t.device.type == "cpu" for t in tensors)  # nothing left on the meta device
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert not any(p.requires_grad for p in model.parameters())
    assert loaded.text_encoder.embeddings.position_ids.tolist() == [list(range(77))]


def test_save_then_load_round_trips_every_tensor(tiny_sd15, tiny_sd15_checkpoint, tmp_path):
    path = save_checkpoint(tmp_path / "again.safetensors", tiny_sd15.unet, tiny_sd15.vae, tiny_sd15.text_encoder)
    original, written = load_file(tiny_sd15_checkpoint), load_file(path)
    assert original.keys() == written.keys()
    assert all(torch.equal(original[key], written[key]) for key in original)
    again = load_checkpoint(path)
    for first, second in [(tiny_sd15.unet, again.unet), (tiny_sd15.vae, again.vae)]:
        for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), key
    assert not (tmp_path / "again.safetensors.partial").exists()


def test_ldm_training_extras_in_the_file_are_ignored(tiny_state, tmp_path):
    # Real SD1.x files carry the noise schedule, EMA bookkeeping and, in some merges, a drifted
    # float copy of CLIP's position_ids; none of it is a weight of the three models.
    state = dict(tiny_state)
    state["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77.0)[None] - 1e-4
    save_file(state, tmp_path / "full.safetensors")
    loaded = load_checkpoint(tmp_path / "full.safetensors")
    assert loaded.text_encoder.embeddings.position_ids.tolist() == [list(range(77))]


def test_standalone_vae_file_loads_without_the_checkpoint_prefix(tiny_sd15, tiny_state, tmp_path):
    vae_only = {
        key.removeprefix("first_stage_model."): value
        for key, value in tiny_state.items()
        if key.startswith("first_stage_model.")
    }
    save_file(vae_only, tmp_path / "vae.safetensors")
    vae = load_vae(tmp_path / "vae.safetensors")
    assert vae.config == TINY_VAE
    for (key, a), b in zip(vae.state_dict().items(), tiny_sd15.vae.state_dict().values()):
        assert torch.equal(a, b), key
    assert load_vae(tmp_path / "vae.safetensors", scaling_factor=0.13025).config.scaling_factor == 0.13025


def test_pickle_checkpoint_is_refused_by_default_and_read_weights_only_when_allowed(tiny_state, tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": tiny_state, "global_step": 1}, path)
    with pytest.raises(CheckpointError, match=r"arbitrary code.*allow_pickle=True"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, allow_pickle=True)
    assert loaded.family.unet == TINY_UNET


def test_pickle_saved_under_a_safetensors_name_is_refused_as_pickle_and_read_when_allowed(tiny_state, tmp_path):
    path = tmp_path / "renamed.safetensors"
    torch.save({"state_dict": tiny_state}, path)
    with pytest.raises(CheckpointError, match="PyTorch pickle file despite its name"):
        load_checkpoint(path)
    # torch.load reads any path named .safetensors as safetensors; the loader hands it the open file.
    assert load_checkpoint(path, allow_pickle=True).family.unet == TINY_UNET


# --- errors a user can act on -------------------------------------------------------------------


def test_truncated_file_says_so(tiny_sd15_checkpoint, tmp_path):
    data = Path(tiny_sd15_checkpoint).read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file.*truncated"):
        load_checkpoint(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="diffusers model folder"):
        load_checkpoint(tmp_path / "pipeline")


@pytest.mark.parametrize(
    ("keys", "looks_like"),
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te_text_model_x.alpha"], "LoRA"),
        (
            ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight"],
            "diffusers-format U-Net",
        ),
        (["encoder.conv_in.weight", "decoder.conv_in.weight", "quant_conv.weight"], "standalone VAE"),
        (["classifier.weight", "classifier.bias"], "first keys: 'classifier.bias'"),
    ],
)
def test_foreign_safetensors_file_says_what_it_looks_like(tmp_path, keys, looks_like):
    path = tmp_path / "foreign.safetensors"
    save_file({key: torch.zeros(2, 2) for key in keys}, path)
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint") as error:
        load_checkpoint(path)
    assert looks_like in str(error.value)


def test_missing_and_unexpected_keys_are_named_with_counts(tiny_state, tmp_path):
    state = dict(tiny_state)
    removed = [key for key in state if key.startswith("model.diffusion_model.output_blocks.0.1.")]
    for key in removed:
        del state[key]
    del state["first_stage_model.decoder.norm_out.bias"]
    state["first_stage_model.decoder.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "damaged.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "damaged.safetensors")
    message = str(error.value)
    assert f"U-Net: {len(removed)} tensors missing" in message
    assert "model.diffusion_model.output_blocks.0.1.norm.bias" in message and "more)" in message
    assert "VAE: 1 tensor missing: first_stage_model.decoder.norm_out.bias" in message
    assert "VAE: 1 tensor unexpected: first_stage_model.decoder.extra.weight" in message
