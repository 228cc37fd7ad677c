"""TAESD, the tiny autoencoder, and step previews: the networks against diffusers' AutoencoderTiny on
the same weights, the file layouts people have, and previews through the sampler (method, pace,
files missing or unusable)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from sd_tiny import randomize_

from latentgraph.nodes import previews
from latentgraph.nodes.folders import Folders
from latentgraph.nodes.sd.checkpoint import CheckpointError
from latentgraph.nodes.sd.families import SD1, SDXL
from latentgraph.nodes.sd.taesd import read_tiny_autoencoder, tiny_decode, tiny_decoder, tiny_encode, tiny_encoder
from latentgraph.nodes.services import Services

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # the tiny SD1.5 checkpoint's image size in these runs: an 8x8 latent


def write_taesd(folder: Path, name: str = "taesd", seed: int = 0, suffix: str = ".safetensors",
                latent_channels: int = 4) -> tuple[Path, Path]:
    """A TAESD decoder and encoder in the original layout: `<name>_decoder<suffix>`, `<name>_encoder<suffix>`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, build in (("decoder", tiny_decoder), ("encoder", tiny_encoder)):
        state = randomize_(build(latent_channels), seed + (part == "encoder")).state_dict()
        path = folder / f"{name}_{part}{suffix}"
        if suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state, path)
        paths.append(path)
    return paths[0], paths[1]


def diffusers_tiny(decoder_path: Path, encoder_path: Path):
    """diffusers' AutoencoderTiny with the same weights (its decoder's indices are one lower: no clamp module)."""
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file

    model = AutoencoderTiny()
    state = {f"decoder.layers.{int(k.split('.')[0]) - 1}.{k.split('.', 1)[1]}": v
             for k, v in load_file(decoder_path).items()}
    state |= {f"encoder.layers.{k}": v for k, v in load_file(encoder_path).items()}
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return model.eval()


def test_the_decoder_and_encoder_equal_diffusers_autoencoder_tiny(tmp_path):
    decoder_path, encoder_path = write_taesd(tmp_path)
    reference = diffusers_tiny(decoder_path, encoder_path)
    decoder = read_tiny_autoencoder(decoder_path, "decoder")
    encoder = read_tiny_autoencoder(encoder_path, "encoder")
    generator = torch.Generator().manual_seed(3)
    latent = torch.randn(2, 4, 12, 10, generator=generator) * 2  # some past the soft clamp's knee
    image = torch.rand(2, 3, 48, 40, generator=generator) * 2 - 1
    with torch.no_grad():
        ours = tiny_decode(decoder, latent)
        theirs = reference.decode(latent).sample.clamp(-1, 1)
        assert ours.shape == (2, 3, 96, 80)
        assert (ours - theirs).abs().max() < 1e-5
        assert ours.std() > 0.05 and (ours[0] - ours[1]).abs().mean() > 0.01  # the latent matters
        ours_latent = tiny_encode(encoder, image)
        theirs_latent = reference.encode(image).latents
        assert ours_latent.shape == (2, 4, 6, 5)
        assert (ours_latent - theirs_latent).abs().max() < 1e-5


def test_every_file_layout_reads_to_the_same_network(tmp_path):
    decoder_path, encoder_path = write_taesd(tmp_path / "original")
    expected = read_tiny_autoencoder(decoder_path).state_dict()
    # diffusers' AutoencoderTiny file: both parts in one, `decoder.layers.N` one lower than ours.
    combined = diffusers_tiny(decoder_path, encoder_path).state_dict()
    save_file(combined, tmp_path / "diffusion_pytorch_model.safetensors")
    from_diffusers = read_tiny_autoencoder(tmp_path / "diffusion_pytorch_model.safetensors", "decoder").state_dict()
    encoder_from_diffusers = read_tiny_autoencoder(tmp_path / "diffusion_pytorch_model.safetensors", "encoder")
    # ComfyUI's module names.
    from safetensors.torch import load_file

    save_file({f"taesd_decoder.{k}": v for k, v in load_file(decoder_path).items()}, tmp_path / "comfy.safetensors")
    from_comfy = read_tiny_autoencoder(tmp_path / "comfy.safetensors").state_dict()
    for other in (from_diffusers, from_comfy):
        assert other.keys() == expected.keys()
        assert all(torch.equal(other[k], expected[k]) for k in expected)
    assert all(torch.equal(a, b) for a, b in zip(encoder_from_diffusers.state_dict().values(),
                                                  read_tiny_autoencoder(encoder_path, "encoder").state_dict().values()))


def test_pth_files_are_read_weights_only_and_only_when_pickles_are_allowed(tmp_path):
    decoder_pth, _ = write_taesd(tmp_path, suffix=".pth")
    with pytest.raises(CheckpointError, match=r"taesd_decoder\.pth is a pickle checkpoint .*refused by default"):
        read_tiny_autoencoder(decoder_pth)
    decoder = read_tiny_autoencoder(decoder_pth, allow_pickle=True)
    reference = randomize_(tiny_decoder(), 0).state_dict()
    assert all(torch.equal(decoder.state_dict()[k], reference[k]) for k in reference)


def test_files_that_are_not_taesd_say_what_is_wrong(tmp_path):
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match=r"vae\.safetensors is not a TAESD decoder \(no decoder weights"):
        read_tiny_autoencoder(tmp_path / "vae.safetensors")
    decoder_path, _ = write_taesd(tmp_path)
    from safetensors.torch import load_file

    state = load_file(decoder_path)
    del state["19.weight"]
    state["4.conv.2.weight"] = torch.zeros(64, 64, 1, 1)
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match=r"broken\.safetensors is not a complete TAESD decoder: "
                                              r"19\.weight is missing; 4\.conv\.2\.weight has shape \[64, 64, 1, 1\], "
                                              r"a TAESD decoder has \[64, 64, 3, 3\]$"):
        read_tiny_autoencoder(tmp_path / "broken.safetensors")
    _, encoder_path = write_taesd(tmp_path / "encoder")
    state = load_file(encoder_path)
    del state["14.weight"]
    save_file(state, tmp_path / "no_end.safetensors")
    with pytest.raises(CheckpointError, match=r"no_end\.safetensors is not a complete TAESD encoder: 14\.weight is missing"):
        read_tiny_autoencoder(tmp_path / "no_end.safetensors", "encoder")
    with pytest.raises(ValueError, match="part must be 'decoder' or 'encoder'"):
        read_tiny_autoencoder(decoder_path, "middle")


def test_the_latent_channels_come_from_the_weights(tmp_path):
    decoder_path, encoder_path = write_taesd(tmp_path, name="taesd3", latent_channels=16)
    decoder = read_tiny_autoencoder(decoder_path)
    encoder = read_tiny_autoencoder(encoder_path, "encoder")
    assert decoder[1].in_channels == 16 and encoder[-1].out_channels == 16
    assert tiny_decode(decoder, torch.zeros(1, 16, 4, 4)).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------
# Previews


def preview_run(executor, **overrides):
    from test_sd_nodes import txt2img

    seen = []
    unsubscribe = executor.events.subscribe(lambda e: seen.append(e) if e.type == "node_progress" else None)
    try:
        result = executor.run(txt2img(**overrides), outputs=["sampler"])
    finally:
        unsubscribe()
    assert result.ok, result.errors
    return result, [e.data.get("preview") for e in seen]


@pytest.fixture
def every_step(monkeypatch):
    """Previews at every step whatever they cost (the tiny U-Net's steps are cheaper than a TAESD
    preview, which the pace would skip): a preview's share of the time may be all of it."""
    monkeypatch.setattr(previews, "PREVIEW_SHARE", 1.0)


def test_with_a_taesd_file_previews_are_full_size_and_the_last_is_the_final_latent_decoded(sd_executor, every_step):
    folders = sd_executor.services.folders
    decoder_path, _ = write_taesd(folders.models / "vae_approx")
    result, shown = preview_run(sd_executor, **{"sampler.steps": 3, "sampler.sampler": "euler"})
    assert len(shown) == 3 and all(p is not None and p.size == (SIZE, SIZE) for p in shown)
    final = result.values["sampler"]["latent"].samples  # Euler's last step: the denoised estimate itself
    expected = previews.taesd_preview(read_tiny_autoencoder(decoder_path), final)
    assert shown[-1].tobytes() == expected.tobytes()
    assert shown[0].tobytes() != shown[-1].tobytes()
    # latent2rgb when asked, though the file is there: 1/8 of the size.
    sd_executor.services.preview_method = "latent2rgb"
    _, shown = preview_run(sd_executor, **{"sampler.seed": 9})
    assert all(p.size == (SIZE // 8, SIZE // 8) for p in shown)
    sd_executor.services.preview_method = "none"
    _, shown = preview_run(sd_executor, **{"sampler.seed": 10})
    assert shown == [None] * 4


def test_without_a_usable_file_previews_fall_back_to_latent2rgb_and_say_why_once(sd_executor, caplog, every_step):
    services = sd_executor.services
    services.preview_method = "taesd"
    previews._told.clear()
    with caplog.at_level(logging.WARNING, logger="latentgraph.nodes.previews"):
        _, shown = preview_run(sd_executor)
        _, again = preview_run(sd_executor, **{"sampler.seed": 5})
    assert all(p.size == (SIZE // 8, SIZE // 8) for p in shown + again)
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1 and "no taesd_decoder.safetensors (or .pth) for Stable Diffusion 1.x in " in told[0]
    assert str(services.folders.models / "vae_approx") in told[0]

    # A .pth file without --allow-pickle: not read, said once, latent2rgb.
    write_taesd(services.folders.models / "vae_approx", suffix=".pth")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latentgraph.nodes.previews"):
        _, shown = preview_run(sd_executor, **{"sampler.seed": 6})
        preview_run(sd_executor, **{"sampler.seed": 7})
    assert all(p.size == (SIZE // 8, SIZE // 8) for p in shown)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "taesd_decoder.pth cannot be used" in message and "refused by default" in message
    services.allow_pickle = True
    _, shown = preview_run(sd_executor, **{"sampler.seed": 8})
    assert all(p.size == (SIZE, SIZE) for p in shown)


def test_each_family_finds_its_own_decoder_and_a_large_latent_is_shrunk_first(tmp_path):
    folders = Folders(models=tmp_path / "models", inputs=tmp_path / "in", outputs=tmp_path / "out", temp=tmp_path / "t")
    services = Services(folders=folders)
    ctx = SimpleNamespace(services=services)
    write_taesd(folders.models / "vae_approx", name="taesd", seed=0)
    latent = torch.randn(1, 4, 96, 80, generator=torch.Generator().manual_seed(1))
    sd1 = previews.previewer_for(ctx, SimpleNamespace(spec=SD1, unet=None))
    sdxl = previews.previewer_for(ctx, SimpleNamespace(spec=SDXL, unet=None))
    # SD1.x: TAESD, the 96x80 latent shrunk to 64x53 (512x424 pixels); SDXL has no taesdxl file yet.
    assert sd1(latent).size == (424, 512)
    assert sdxl(latent).size == (80, 96)
    write_taesd(folders.models / "vae_approx", name="taesdxl", seed=5)
    sdxl = previews.previewer_for(ctx, SimpleNamespace(spec=SDXL, unet=None))
    small = latent[:, :, :16, :16]
    assert sdxl(small).size == (128, 128)
    assert sdxl(small).tobytes() != sd1(small).tobytes()  # another decoder's weights
    # A1111's folder name is searched too.
    other = Folders(models=tmp_path / "m2", inputs=tmp_path / "in", outputs=tmp_path / "out", temp=tmp_path / "t",
                    extra_model_roots=[tmp_path / "a1111"])
    write_taesd(tmp_path / "a1111" / "VAE-taesd")
    assert other.tiny_autoencoder_file("taesd", "decoder") == tmp_path / "a1111" / "VAE-taesd" / "taesd_decoder.safetensors"
    assert other.tiny_autoencoder_file("taesdxl", "decoder") is None


def test_previews_take_at_most_their_share_of_the_time_and_the_last_step_always_has_one():
    assert previews.PREVIEW_SHARE == 0.1
    now = [0.0]
    pace = previews.PreviewPace(asynchronous=False, clock=lambda: now[0])
    made = []

    def preview(step: int, cost: float) -> None:
        def make():
            now[0] += cost
            made.append(step)
        if pace.due(step, 10):
            pace.timed(make)

    for step in range(1, 11):  # steps 1 s apart, each preview costing 0.25 s: 2.5 s apart at least
        preview(step, 0.25)
        now[0] += 1.0
    assert made == [1, 4, 7, 10]  # previews at 0, 3.25 and 6.5 s (2.5 s apart at least), and the last step
    # Free previews: every step on the CPU, every ASYNC_PREVIEW_INTERVAL seconds on CUDA.
    made.clear()
    pace = previews.PreviewPace(asynchronous=True, clock=lambda: now[0])
    for step in range(1, 11):
        preview(step, 0.0)
        now[0] += 0.1
    assert made == [1, 4, 7, 10]


def test_serve_and_run_choose_their_preview_method(tmp_path):
    from latentgraph.cli import build_parser

    parser = build_parser()
    serve = parser.parse_args(["serve"])
    run = parser.parse_args(["run", str(ROOT / "workflows" / "txt2img.json")])
    assert serve.preview_method is None and run.preview_method is None  # each command's own default
    from latentgraph.cli import _services

    assert _services(run).preview_method == "none"  # `run` shows no images
    chosen = parser.parse_args(["run", "--preview-method", "taesd", str(ROOT / "workflows" / "txt2img.json")])
    assert _services(chosen).preview_method == "taesd"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--preview-method", "vae"])
    with pytest.raises(ValueError, match="preview_method must be one of auto, latent2rgb, taesd, none, not 'vae'"):
        Services(preview_method="vae")
    assert json.loads(json.dumps(previews.PREVIEW_METHODS)) == ["auto", "latent2rgb", "taesd", "none"]


def test_a_checkpoint_with_a_vae_of_its_own_keeps_latent2rgb_previews(tmp_path, every_step):
    """The bundled demo model's VAE is its own (its file sets another latent scale): SD's TAESD does
    not know its latents, so its previews stay latent2rgb though a taesd_decoder is present."""
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from test_sd_nodes import load

    folders = Folders(models=tmp_path / "models", inputs=tmp_path / "in", outputs=tmp_path / "out", temp=tmp_path / "t")
    write_taesd(folders.models / "vae_approx")
    executor = Executor(registry, OutputCache(1 << 30), services=Services(folders=folders), events=EventBus())
    seen = []
    executor.events.subscribe(lambda e: seen.append(e.data["preview"]) if e.type == "node_progress" else None)
    result = executor.run(load("txt2img.json", **{"sampler.steps": 3}), outputs=["sampler"])  # the demo model, 64x64
    assert result.ok, result.errors
    model = executor.run(load("txt2img.json"), outputs=["checkpoint"]).values["checkpoint"]["model"]
    assert model.spec.name == "sd1" and model.spec.latent.taesd == "" and model.spec.latent.scaling_factor != 0.18215
    assert [p.size for p in seen] == [(8, 8)] * 3

    # Its preview colours are fitted to its own VAE: SD1.x's map (another VAE's) is far off there.
    from latentgraph.nodes.sd.spec import latent_rgb

    assert model.spec.latent.rgb_factors != SD1.latent.rgb_factors
    vae = executor.run(load("txt2img.json"), outputs=["checkpoint"]).values["checkpoint"]["vae"].model
    for text in ("a red circle on a blue background, top left", "a green square on a white background, bottom right"):
        latent = executor.run(load("txt2img.json", **{"positive.text": text}), outputs=["sampler"]).values[
            "sampler"]["latent"].samples
        with torch.no_grad():
            shown = torch.nn.functional.avg_pool2d(vae.decode(latent / vae.config.scaling_factor).clamp(-1, 1), 8)
        shown = shown[0].permute(1, 2, 0)
        fitted = (latent_rgb(latent[0], model.spec.latent).clamp(-1, 1) - shown).abs().mean()
        family = (latent_rgb(latent[0], SD1.latent).clamp(-1, 1) - shown).abs().mean()
        assert fitted < 0.4 and fitted < 0.6 * family, (text, fitted, family)


def test_preview_colours_are_fitted_by_least_squares_to_what_the_vae_encodes():
    """A stand-in VAE whose latent is a known affine map of each 8x8 block's colour: the fitted
    preview map inverts it exactly."""
    from latentgraph.nodes.sd.vae import LatentDistribution, VAEConfig, fit_preview_colours

    mixing = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6], [-0.1, 0.2, 0.9], [0.7, 0.1, 0.2]])
    offset = torch.tensor([0.1, -0.3, 0.2, 0.05])

    class BlockColourVae(torch.nn.Module):
        config = VAEConfig(scaling_factor=2.0)

        def encode(self, image):
            blocks = torch.nn.functional.avg_pool2d(image, 8)
            mean = torch.einsum("rc,bchw->brhw", mixing, blocks) + offset[None, :, None, None]
            return LatentDistribution(mean / 2.0, torch.zeros_like(mean))  # times the scaling factor: `mean`

    factors, bias = fit_preview_colours(BlockColourVae())
    colours = torch.rand(5, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    latents = colours @ mixing.T + offset
    recovered = latents @ torch.tensor(factors) + torch.tensor(bias)
    assert (recovered - colours).abs().max() < 1e-3


# ---------------------------------------------------------------------------------------------
# TAESD as the VAE (ComfyUI's "taesd" / "taesdxl" VAE choices)


def with_tiny_vae(document: dict, name: str = "taesd") -> dict:
    """A txt2img workflow whose decode uses `vae_loader` with `name` instead of the checkpoint's VAE."""
    document["nodes"]["tiny"] = {"type": "vae_loader", "inputs": {"vae_name": name}}
    document["nodes"]["decode"]["inputs"]["vae"] = {"node": "tiny", "output": "vae"}
    return document


def test_taesd_is_a_vae_choice_when_its_decoder_and_encoder_are_both_there(sd_executor):
    from latentgraph.engine import WorkflowInvalid
    from latentgraph.nodes.loaders import _vae_choices
    from test_sd_nodes import txt2img

    folders = sd_executor.services.folders

    write_taesd(folders.models / "vae_approx")
    (folders.models / "vae_approx" / "taesd_encoder.safetensors").unlink()
    assert "taesd" not in _vae_choices(sd_executor.services)
    with pytest.raises(WorkflowInvalid) as refused:
        sd_executor.run(with_tiny_vae(txt2img()))
    (issue,) = refused.value.issues
    assert (issue.node, issue.input, issue.code) == ("tiny", "vae_name", "not_in_choices") and "'taesd'" in issue.message
    write_taesd(folders.models / "vae_approx")
    assert _vae_choices(sd_executor.services)[-1:] == ["taesd"]  # taesdxl has no files here


def test_decoding_and_encoding_with_taesd_equal_diffusers_autoencoder_tiny(sd_executor):
    import numpy as np
    from test_sd_nodes import image_of, txt2img

    folders = sd_executor.services.folders
    decoder_path, encoder_path = write_taesd(folders.models / "vae_approx", seed=4)
    result = sd_executor.run(with_tiny_vae(txt2img(**{"sampler.seed": 2})))
    assert result.ok, result.errors
    latent = sd_executor.run(txt2img(**{"sampler.seed": 2}), outputs=["sampler"]).values["sampler"]["latent"].samples
    reference = diffusers_tiny(decoder_path, encoder_path)
    with torch.no_grad():
        expected = ((reference.decode(latent).sample.clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).numpy()
    saved = image_of(sd_executor, result).astype(np.float64)
    assert saved.shape == (SIZE, SIZE, 3)
    assert np.abs(saved - expected).max() <= 1  # PNG rounding
    # The checkpoint's own VAE makes another picture of the same latent.
    own = image_of(sd_executor, sd_executor.run(txt2img(**{"sampler.seed": 2}))).astype(np.float64)
    assert np.abs(own - saved).mean() > 5

    # Encoding: the image through vae_encode with TAESD is diffusers' encode of it.
    from latentgraph.nodes.sd.handles import Vae

    tiny = sd_executor.run({"format": "latentgraph/workflow@1", "nodes": {
        "tiny": {"type": "vae_loader", "inputs": {"vae_name": "taesd"}}}}, outputs=["tiny"]).values["tiny"]["vae"]
    assert isinstance(tiny, Vae) and tiny.scaling_factor == 1.0 and tiny.source == "taesd"
    image = torch.rand(1, 32, 40, 3, generator=torch.Generator().manual_seed(8))
    document = {"format": "latentgraph/workflow@1", "nodes": {
        "tiny": {"type": "vae_loader", "inputs": {"vae_name": "taesd"}},
        "encode": {"type": "vae_encode", "inputs": {"vae": {"node": "tiny", "output": "vae"},
                                                    "image": {"node": "img", "output": "image"}}},
        "img": {"type": "load_image", "inputs": {"image": "in.png"}}}}
    from PIL import Image

    Image.fromarray((image[0].numpy() * 255).round().astype("uint8")).save(folders.inputs / "in.png")
    encoded = sd_executor.run(document, outputs=["encode"]).values["encode"]["latent"].samples
    loaded = torch.from_numpy(np.asarray(Image.open(folders.inputs / "in.png"), dtype=np.float32) / 255)
    with torch.no_grad():
        expected_latent = reference.encode(loaded.permute(2, 0, 1)[None] * 2 - 1).latents
    assert encoded.shape == (1, 4, 4, 5)
    assert (encoded - expected_latent).abs().max() < 1e-4
