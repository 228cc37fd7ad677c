"""The bundled demo model: its dataset, and what it draws through the whole node graph.

Dataset tests always run. Model tests use the shipped checkpoint
models/checkpoints/latentgraph-demo.safetensors (skipped, saying so, where it is absent) and
generate every image the way a user does: workflows/txt2img.json through the engine's Executor
(tokenizer -> CLIP -> sampler with classifier-free guidance -> VAE decode -> PNG), then read the
PNG back with latentgraph.training.measure. They check meaning, not pixels: the colours and the place
the prompt asks for, for several samplers, schedules and seeds, so a broken sampler, schedule,
guidance or text path makes them fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentgraph.training.dataset import (
    COLOURS,
    NEUTRAL,
    POSITIONS,
    SHAPES,
    ShapesDataset,
    caption,
    parse_caption,
    random_collage,
    render,
    spec_for,
)
from latentgraph.training.measure import colour_error, read_image, saturated_colour

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "checkpoints" / "latentgraph-demo.safetensors"
needs_checkpoint = pytest.mark.skipif(
    not CHECKPOINT.is_file(),
    reason=f"the demo checkpoint {CHECKPOINT.relative_to(ROOT)} is absent; "
    "train it with `python -m latentgraph.training.train` (about 40 minutes on 2 CPU cores)",
)


# --- the dataset ----------------------------------------------------------------------------------


def test_the_dataset_is_reproducible_from_its_seed():
    a, b, other = ShapesDataset(seed=3), ShapesDataset(seed=3), ShapesDataset(seed=4)
    for index in (0, 17, 12345):
        first, second = a.example(index), b.example(index)
        assert first.caption == second.caption
        assert np.array_equal(first.image, second.image)
    assert [a.example(i).caption for i in range(20)] != [other.example(i).caption for i in range(20)]
    images, captions = a.batch(10, 4)
    assert images.shape == (4, 3, 64, 64) and float(images.min()) >= -1 and float(images.max()) <= 1
    assert captions == [a.example(i).caption for i in range(10, 14)]
    assert np.array_equal(a.collages(5, 2).numpy(), b.collages(5, 2).numpy())


def test_every_caption_says_what_its_image_shows():
    data = ShapesDataset(seed=11)
    named_positions = 0
    for index in range(300):
        example = data.example(index)
        named = parse_caption(example.caption)
        spec = example.spec
        assert named["shape"] == spec.shape
        for attribute in ("colour", "background", "size", "position"):
            if attribute in named:
                assert named[attribute] == getattr(spec, attribute), example.caption
        if "background" not in named:
            assert spec.background in NEUTRAL, example.caption  # unnamed means white, gray or black
        named_positions += "position" in named
        # ... and the pixels agree with the spec, as measured.
        reading = read_image(example.image)
        assert (reading.colour, reading.background, reading.shape, reading.position) == (
            spec.colour, spec.background, spec.shape, spec.position), example.caption
    assert 150 < named_positions < 300  # captions leave the position out sometimes, not always


def test_a_rendered_caption_has_those_pixels():
    spec = spec_for("square", "blue", "yellow", "large", "center")
    assert caption(spec) == "a large blue square on a yellow background, center"
    image = render(spec)
    assert tuple(image[32, 32]) == COLOURS["blue"]
    for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
        assert tuple(corner) == COLOURS["yellow"]

    image = render(spec_for("circle", "red", "white", "small", "top left")).astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert xs.mean() < 64 / 3 and ys.mean() < 64 / 3 and 80 < red.sum() < 200  # pi * 7^2 = 154


def test_the_measurement_reads_every_shape_colour_and_position_of_the_dataset():
    for shape in SHAPES:
        for position in POSITIONS:
            for size in ("small", "large"):
                spec = spec_for(shape, "green", "white", size, position)
                reading = read_image(render(spec))
                assert (reading.shape, reading.position, reading.colour, reading.background, reading.size) == (
                    shape, position, "green", "white", size)
    assert saturated_colour(render(spec_for("star", "purple", "gray"))) == "purple"
    reading = read_image(render(spec_for("square", "orange", "blue", "large")))
    assert colour_error(reading.colour_rgb, "orange") == 0.0 and colour_error(reading.background_rgb, "blue") == 0.0
    assert colour_error(reading.colour_rgb, "red") == pytest.approx(np.linalg.norm(np.subtract(COLOURS["orange"], COLOURS["red"])))


def test_captions_parse_back_and_strangers_are_refused():
    assert parse_caption("a red circle") == {"colour": "red", "shape": "circle"}
    assert parse_caption("An orange star on a black background, bottom left") == {
        "colour": "orange", "shape": "star", "background": "black", "position": "bottom left"}
    assert parse_caption("a small square, top") == {"size": "small", "shape": "square", "position": "top"}
    for text in ("a red hexagon", "two red circles", "a circle on a plaid background"):
        with pytest.raises(ValueError):
            parse_caption(text)


def test_vae_collages_hold_several_shapes_on_one_background():
    image = random_collage(np.random.default_rng(2))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 10  # shapes with anti-aliased edges


# --- the checkpoint -------------------------------------------------------------------------------


@needs_checkpoint
def test_the_demo_checkpoint_is_a_small_sd1_checkpoint_with_its_own_vae_scale():
    from safetensors import safe_open

    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.nodes.sd.layout import SCALING_FACTOR_METADATA_KEY

    assert CHECKPOINT.stat().st_size < 30e6
    with safe_open(str(CHECKPOINT), framework="pt") as handle:
        metadata = handle.metadata()
        assert {str(handle.get_slice(key).get_dtype()) for key in handle.keys()} <= {"F16", "I64"}
    loaded = load_checkpoint(CHECKPOINT)
    assert loaded.family.name == "sd1" and loaded.family.prediction_type == "epsilon"
    assert loaded.family.vae_scaling_factor == pytest.approx(float(metadata[SCALING_FACTOR_METADATA_KEY]))
    assert loaded.family.vae_scaling_factor != pytest.approx(0.18215)
    assert loaded.family.unet.context_dim == loaded.family.text_encoder.hidden_size
    assert loaded.family.text_encoder.vocab_size == 49408
    assert loaded.family.vae.downscale == 8 and loaded.family.latent_channels == 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A GraphGenerator: txt2img.json through the Executor, with the demo checkpoint installed."""
    if not CHECKPOINT.is_file():
        pytest.skip(needs_checkpoint.kwargs["reason"])
    import torch

    from latentgraph.training.evaluate import GraphGenerator, demo_folders

    torch.set_num_threads(min(2, torch.get_num_threads()))
    with demo_folders(CHECKPOINT, tmp_path_factory.mktemp("demo")) as folders:
        yield GraphGenerator(folders)


# Prompts that name everything the measurement checks, and seeds; each sampler draws all of them.
PROMPTS = (
    "a red circle on a blue background, top left",
    "a large yellow square on a purple background, bottom right",
    "a white star on a green background, center",
    "a blue triangle on a white background, top right",
)
SEEDS = (1, 2)
SAMPLERS = (  # (sampler, scheduler)
    ("euler", "normal"),
    ("euler_ancestral", "normal"),
    ("dpmpp_2m", "karras"),
    ("ddim", "ddim_uniform"),
    ("uni_pc", "normal"),
)


@needs_checkpoint
@pytest.mark.parametrize("sampler,scheduler", SAMPLERS, ids=[f"{s}-{k}" for s, k in SAMPLERS])
def test_the_images_show_the_colours_and_place_the_prompt_asks_for(demo, sampler, scheduler):
    misses = []
    for prompt in PROMPTS:
        asked = parse_caption(prompt)
        for seed in SEEDS:
            image = demo.generate(prompt, seed=seed, sampler=sampler, scheduler=scheduler, steps=20)
            reading = read_image(image)
            got = {"colour": reading.colour, "background": reading.background, "position": reading.position}
            wrong = {key: value for key, value in got.items() if value != asked[key]}
            if wrong:
                misses.append((prompt, seed, wrong))
    assert len(misses) <= 1, misses  # at most one of the 8 images may miss anything


@needs_checkpoint
def test_a_red_circle_is_red_and_a_blue_square_on_yellow_has_a_yellow_border_and_blue_centre(demo):
    for seed in (1, 2, 3):
        assert saturated_colour(demo.generate("a red circle", seed=seed)) == "red"
        image = demo.generate("a large blue square on a yellow background, center", seed=seed).astype(float)
        border = np.concatenate([image[:3].reshape(-1, 3), image[-3:].reshape(-1, 3),
                                 image[:, :3].reshape(-1, 3), image[:, -3:].reshape(-1, 3)])
        from latentgraph.training.measure import nearest_colour

        assert nearest_colour(np.median(border, axis=0)) == "yellow"
        assert nearest_colour(np.median(image[26:38, 26:38].reshape(-1, 3), axis=0)) == "blue"


@needs_checkpoint
def test_the_prompt_as_negative_steers_away_from_its_colour(demo):
    """Guidance goes the right way: with "a red circle" as the negative prompt and an empty
    positive one, red is what the image avoids (a sign error in CFG would make it red)."""
    for seed in (1, 2, 3, 4):
        image = demo.generate("", negative="a red circle", seed=seed)
        assert read_image(image).colour != "red" and saturated_colour(image) != "red"
        assert saturated_colour(demo.generate("a red circle", seed=seed)) == "red"


CFG_PROMPTS = tuple(
    f"a {colour} {shape} on a {background} background, {position}"
    for colour, shape, background, position in (
        ("red", "circle", "gray", "top"), ("green", "square", "pink", "left"), ("blue", "star", "yellow", "center"),
        ("yellow", "diamond", "black", "bottom left"), ("purple", "triangle", "white", "right"),
        ("orange", "circle", "blue", "top right"), ("pink", "square", "green", "bottom"),
        ("white", "star", "red", "top left"), ("black", "triangle", "orange", "center"),
        ("red", "diamond", "white", "bottom right"), ("green", "circle", "purple", "center"),
        ("blue", "square", "white", "top"),
    )
)


@needs_checkpoint
def test_guidance_makes_the_colours_match_the_prompt_more_closely(demo):
    """At cfg 1.0 (no guidance) the shape's colour is measurably further from the one the prompt
    names than at the workflow's default scale: the mean RGB distance between the shape's
    measured colour and the palette colour asked for. (At this model's default, cfg 2, every
    colour is right; without guidance colours come out washed out or wrong. Over 100 random
    prompts the README reports 11.1 against 15.6.)"""
    from latentgraph.training.evaluate import load_workflow

    default_cfg = load_workflow()["nodes"]["sampler"]["inputs"]["cfg"]
    assert default_cfg > 1.0

    def colour_match(cfg: float) -> tuple[int, float]:
        hits, errors = 0, []
        for index, prompt in enumerate(CFG_PROMPTS):
            reading = read_image(demo.generate(prompt, seed=100 + index, cfg=cfg))
            asked = parse_caption(prompt)["colour"]
            hits += reading.colour == asked
            errors.append(colour_error(reading.colour_rgb, asked))
        return hits, float(np.mean(errors))

    (guided_hits, guided_error), (unguided_hits, unguided_error) = colour_match(default_cfg), colour_match(1.0)
    assert guided_hits >= len(CFG_PROMPTS) - 1 and guided_hits >= unguided_hits, (guided_hits, unguided_hits)
    assert guided_error < 0.85 * unguided_error, (guided_error, unguided_error)


@needs_checkpoint
def test_in_bf16_every_model_is_bf16_and_the_images_stay_within_2_of_255_of_fp32(demo):
    """`--precision bf16` on the CPU: U-Net, text encoder and VAE in bf16 (the sampler's state in
    float32); the shipped workflow's images keep what they show, within 2/255 on average of fp32's
    (over 100 prompts: 0.4/255, and the accuracy table within a point; see the README's demo
    model section)."""
    import torch

    from latentgraph.training.evaluate import GraphGenerator

    half = GraphGenerator(demo.folders, precision="bf16")
    for index, prompt in enumerate(PROMPTS):
        full_image = demo.generate(prompt, seed=10 + index).astype(np.int16)
        half_image = half.generate(prompt, seed=10 + index).astype(np.int16)
        difference = np.abs(full_image - half_image)
        assert 0 < difference.mean() <= 2.0, (prompt, difference.mean())  # rounded otherwise, not the same run
        full_reading, half_reading = (read_image(image.astype(np.uint8)) for image in (full_image, half_image))
        for attribute in ("colour", "shape", "background", "position", "size"):
            assert getattr(half_reading, attribute) == getattr(full_reading, attribute), (prompt, attribute)
    (loaded, _), = half.executor.services.models._models.values()
    models = (loaded.unet, loaded.vae, *loaded.text_encoders.values())
    assert {p.dtype for m in models for p in m.parameters()} == {torch.bfloat16}


# --- the training script --------------------------------------------------------------------------


def _tiny_training(**changes):
    from dataclasses import replace

    from latentgraph.training.train import TrainSettings

    return replace(TrainSettings(), vae_steps=3, vae_batch=4, unet_steps=3, unet_batch=4, text_pretrain_steps=3,
                   text_pretrain_batch=8, warmup_steps=2, scale_images=16, threads=1, **changes)


def _contents(path):
    """(tensors, metadata) of a safetensors file; its header's key order is not fixed, so files
    with the same contents need not have the same bytes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


def test_training_writes_a_loadable_sd1_checkpoint_and_is_deterministic(tmp_path):
    """A few steps of every stage, twice with the same seed: the same tensors and metadata,
    loaded by the loader every checkpoint goes through, with the VAE scale the run measured."""
    import io
    import json

    import torch

    from safetensors import safe_open

    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.training.train import train
    from latentgraph.nodes.sd.layout import SCALING_FACTOR_METADATA_KEY

    threads = torch.get_num_threads()
    progress = io.StringIO()
    first = train(_tiny_training(), tmp_path / "a.safetensors", progress_stream=progress)
    second = train(_tiny_training(), tmp_path / "b.safetensors", progress_stream=io.StringIO())
    other = train(_tiny_training(seed=1), tmp_path / "c.safetensors", progress_stream=io.StringIO())
    a, b, c = (_contents(tmp_path / name) for name in ("a.safetensors", "b.safetensors", "c.safetensors"))
    assert a[1] == b[1] and a[0].keys() == b[0].keys() == c[0].keys()
    assert all(torch.equal(a[0][key], b[0][key]) for key in a[0])
    assert not all(torch.equal(a[0][key], c[0][key]) for key in a[0])
    lines = progress.getvalue().splitlines()
    assert any(line.startswith("vae  [") and "3/3" in line for line in lines), lines
    assert any(line.startswith("text [") for line in lines) and any(line.startswith("unet [") for line in lines)
    assert first["vae_scaling_factor"] == second["vae_scaling_factor"] > 0
    assert first["checkpoint_bytes"] == (tmp_path / "a.safetensors").stat().st_size
    assert torch.get_num_threads() == threads  # the run's thread count does not leak into the process

    loaded = load_checkpoint(tmp_path / "a.safetensors")
    assert loaded.family.name == "sd1" and loaded.family.prediction_type == "epsilon"
    assert loaded.family.vae_scaling_factor == pytest.approx(first["vae_scaling_factor"])
    assert loaded.family.unet.num_heads == 8 and loaded.family.unet.context_dim == 64
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert float(metadata[SCALING_FACTOR_METADATA_KEY]) == pytest.approx(first["vae_scaling_factor"])
    assert json.loads(metadata["latentgraph.demo"])["settings"]["seed"] == 0


def test_a_frozen_text_encoder_is_trained_only_before_the_unet(tmp_path):
    """train_text_with_unet=False: the diffusion stage leaves the pretrained text encoder as it was."""
    import io

    import torch

    from latentgraph.training import train as training

    settings = _tiny_training(train_text_with_unet=False)
    seen = {}

    def on_step(step, unet, text_encoder):
        seen[step] = {k: v.clone() for k, v in text_encoder.state_dict().items()}

    vae = training.AutoencoderKL(settings.vae).eval().requires_grad_(False)
    _, text_encoder, stats = training.train_diffusion(vae, 1.0, settings, io.StringIO(), on_step=on_step)
    assert sorted(seen) == [1, 2, 3] and stats["diffusion_mse"] > 0
    for key, value in text_encoder.state_dict().items():
        assert torch.equal(seen[1][key], value) and torch.equal(seen[3][key], value), key


def test_sweep_variants_are_checked_before_anything_trains():
    import argparse

    from latentgraph.training.sweep import parse_variant

    assert parse_variant('frozen={"train_text_with_unet": false}') == ("frozen", {"train_text_with_unet": False})
    for text, message in (("frozen", "expected NAME=JSON"), ("x=[1]", "expected a JSON object"),
                          ('x={"unet_step": 1}', "unknown TrainSettings fields unet_step"), ("x={", "variant 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_variant(text)


@needs_checkpoint
def test_the_sweeps_batched_scoring_agrees_with_the_graph():
    """The sweep scores a batch in one sampler pass, outside the graph; on the demo model it must
    read what the graph's evaluation reads (every colour, background and position right)."""
    import torch

    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.training.evaluate import evaluation_prompts
    from latentgraph.training.sweep import batch_scores

    loaded = load_checkpoint(CHECKPOINT)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    scores = batch_scores(loaded.unet, loaded.text_encoder, loaded.vae, evaluation_prompts(8), 2.0, "cpu")
    assert scores["colour"] == scores["background"] == scores["position"] == 100.0, scores
    assert scores["colour_error"] < 25, scores
