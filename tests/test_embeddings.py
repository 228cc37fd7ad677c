"""Textual-inversion embeddings (`embedding:name` in prompts) against diffusers' load_textual_inversion.

diffusers adds an embedding as new tokens (`<toy>`, and `<toy>_1`, `<toy>_2`... for more vectors)
whose rows in the text encoder's token embedding are the embedding's vectors, and its pipelines
expand `<toy>` in a prompt to all of them; we feed the vectors in place of the token embeddings
where `embedding:toy` stands. On the same tiny checkpoints (tests/sd_tiny.py), loaded on
diffusers' side by its own single-file loader from local config folders (tests/diffusers_tiny.py),
the conditioning (and SDXL's pooled vector) must agree to 1e-4 of its largest value; observed: 0
(bitwise, one thread) for SD1.x, SD2.x and SDXL. The embeddings change the conditioning by ~0.4 of
its largest value, so the comparisons are not vacuous.

Also here: the file layouts (A1111 .pt and .safetensors, flattened A1111, diffusers, SDXL), the
encoder each set goes to and the width errors, emphasis weights on embeddings (the ComfyUI
formula), the 75-token window rule, and the clip_text_encode node: embeddings from the models
folder, the validation error for a literal prompt naming an unknown embedding, the run-time
error for a linked one, pickles only when allowed, and re-encoding when an embedding file changes.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub; set before diffusers is imported

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import DEMO_NAME, SD2_NAME, SDXL_NAME
from diffusers_tiny import (
    clip_text_config,
    scheduler_config,
    unet_config,
    vae_config,
    write_pipeline_folder,
)
from latentgraph.engine import WorkflowInvalid
from latentgraph.nodes.sd.checkpoint import load_checkpoint
from latentgraph.nodes.sd.embeddings import (
    Embedding,
    EmbeddingError,
    EmbeddingNotFound,
    load_embedding,
    parse_embedding,
)
from latentgraph.nodes.sd.prompt import (
    EMBEDDING_PLACEHOLDER_ID,
    embedding_names,
    encode_prompt,
    encode_text,
    tokenize_prompt,
)
from latentgraph.nodes.sd.tokenizer import BOS_ID, EOS_ID
from latentgraph.nodes.services import Services
from safetensors.torch import save_file
from sd_tiny import TINY_TEXT_ENCODER, TINY_UNET, TINY_VAE
from test_sd_pipeline import one_thread  # noqa: F401  (module-scoped autouse: single-threaded, reproducible)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from test_sd2_exact import write_sd2_config_folder
    from test_sdxl_exact import write_diffusers_config as write_sdxl_config_folder

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
TEXT_RTOL = 1e-4  # of max |reference|
CPU = torch.device("cpu")


def vectors(count: int, width: int, seed: int) -> torch.Tensor:
    """Seeded vectors of a trained embedding's scale (about the token embeddings' own: 1/sqrt(width))."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=generator) / math.sqrt(width)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return ((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max()).item()


def fake(name: str, count: int, width: int = 64) -> Embedding:
    return Embedding(name, f"{name}.safetensors", {"*": torch.zeros(count, width)})


def write_a1111_pt(path: Path, value: torch.Tensor, name: str = "toy") -> Path:
    """An embedding as A1111's textual-inversion training saves it (a pickle)."""
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(value.clone())},
                "name": name, "step": 1500, "sd_checkpoint": "e1441589", "sd_checkpoint_name": "v1-5-pruned"}, path)
    return path


# Each layout a file can have, with the vectors [n, 64] it holds.
FORMATS = {
    "a1111.safetensors": lambda path, v: save_file({"emb_params": v}, path),
    "flattened.safetensors": lambda path, v: save_file({"string_to_param.*": v}, path),
    "diffusers.safetensors": lambda path, v: save_file({"<toy>": v}, path),
    "a1111.pt": lambda path, v: write_a1111_pt(path, v),
    "diffusers.bin": lambda path, v: torch.save({"<toy>": v.clone()}, path),
}


# ---------------------------------------------------------------------------------------------
# diffusers' side


@pytest.fixture(scope="module")
def sd1_config(tmp_path_factory) -> Path:
    """A diffusers config folder describing the tiny SD1.x checkpoint (weights come from the file)."""
    return write_pipeline_folder(
        tmp_path_factory.mktemp("sd1-diffusers-config"), "StableDiffusionPipeline",
        {
            "unet": ("diffusers", "UNet2DConditionModel", unet_config(TINY_UNET)),
            "vae": ("diffusers", "AutoencoderKL", vae_config(TINY_VAE)),
            "text_encoder": ("transformers", "CLIPTextModel", clip_text_config(TINY_TEXT_ENCODER)),
            "scheduler": ("diffusers", "DDIMScheduler", scheduler_config()),
        },
        tokenizers={"tokenizer": "<|endoftext|>"},
        safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False,
    )


def from_single_file(pipeline_class, path: Path, config: Path, **kwargs):
    """A fresh pipeline (its own tokenizer and text encoders: load_textual_inversion changes them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_textual_inversion(pipe, source, token: str, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_textual_inversion(source, token=token, **kwargs)


def their_context(pipe, text: str) -> torch.Tensor:
    with torch.no_grad():
        context, _ = pipe.encode_prompt(text, CPU, 1, False)
    return context


# ---------------------------------------------------------------------------------------------
# SD1.x against diffusers


@pytest.mark.parametrize("layout", list(FORMATS))
def test_sd1_conditioning_equals_diffusers_for_every_file_layout(tiny_sd15, tiny_sd15_checkpoint, sd1_config,
                                                                  tmp_path, layout):
    value = vectors(3, 64, seed=1)  # a 3-vector embedding
    path = tmp_path / layout
    FORMATS[layout](path, value)
    embedding = load_embedding(path, "toy", allow_pickle=True)
    assert list(embedding.sets) == ["*"] and torch.equal(embedding.sets["*"], value)
    assert embedding.num_vectors == 3 and embedding.source == layout

    pipe = from_single_file(StableDiffusionPipeline, tiny_sd15_checkpoint, sd1_config)
    load_textual_inversion(pipe, str(path), "<toy>")  # diffusers reads the file itself
    ours, _ = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "a photo of embedding:toy, oil painting",
                          embeddings={"toy": embedding})
    theirs = their_context(pipe, "a photo of <toy>, oil painting")
    error = relative_error(ours, theirs)
    print(f"SD1 {layout}: relative error {error:.3g}")
    assert error <= TEXT_RTOL
    # Not vacuous: without the vectors the encoding is far off from the fourth position on
    # (BOS, a, photo, of come before them, and CLIP's attention is causal).
    plain, _ = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "a photo of , oil painting")
    assert torch.equal(plain[:, :4], ours[:, :4])
    assert relative_error(plain, theirs) > 0.1


def test_sd1_multi_vector_embedding_used_twice_and_its_pooled_vector(tiny_sd15, tiny_sd15_checkpoint, sd1_config,
                                                                      tmp_path):
    value = vectors(4, 64, seed=2)
    save_file({"emb_params": value}, tmp_path / "toy.safetensors")
    embedding = load_embedding(tmp_path / "toy.safetensors", "toy")
    pipe = from_single_file(StableDiffusionPipeline, tiny_sd15_checkpoint, sd1_config)
    load_textual_inversion(pipe, str(tmp_path / "toy.safetensors"), "<toy>")
    text = "embedding:toy standing next to embedding:toy"
    tokens = tokenize_prompt(text, embeddings={"toy": embedding})
    assert len(tokens.embeddings) == 1 and tokens.token_count == 4 + 3 + 4  # "standing next to": 3 tokens
    assert tokens.slots[0, 1:5].tolist() == [0, 1, 2, 3] == tokens.slots[0, 8:12].tolist()
    assert (tokens.ids[0, 1:5] == EMBEDDING_PLACEHOLDER_ID).all() and tokens.ids[0, 12] == EOS_ID

    ours, pooled = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, text, embeddings={"toy": embedding})
    prompt = "<toy> standing next to <toy>"
    assert relative_error(ours, their_context(pipe, prompt)) <= TEXT_RTOL
    # The pooled vector: the last layer at the first end token, which the vectors moved to position 12.
    ids = pipe.tokenizer(pipe.maybe_convert_prompt(prompt, pipe.tokenizer), padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    assert int((ids[0] == EOS_ID).nonzero()[0, 0]) == 12
    with torch.no_grad():
        their_pooled = pipe.text_encoder(ids).pooler_output
    assert relative_error(pooled, their_pooled) <= TEXT_RTOL


def test_encode_prompt_takes_a_lookup_and_matches_encode_text(tiny_sd15):
    toy = Embedding("toy", "toy.safetensors", {"*": vectors(2, 64, seed=3)})
    model = tiny_sd15.text_encoder
    context, pooled = encode_prompt(None, model, "a embedding:toy cat", embeddings=lambda name: toy)
    expected = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "a embedding:toy cat", embeddings={"toy": toy})
    assert torch.equal(context, expected[0]) and torch.equal(pooled, expected[1])


# ---------------------------------------------------------------------------------------------
# SDXL and SD2.x against diffusers


@pytest.fixture(scope="module")
def sdxl(family_checkpoints):
    return load_checkpoint(family_checkpoints[SDXL_NAME])


def sdxl_file(path: Path, count: int = 2, seed: int = 5) -> Path:
    save_file({"clip_l": vectors(count, 64, seed), "clip_g": vectors(count, 128, seed + 1)}, path)
    return path


def test_sdxl_each_encoder_takes_its_own_vectors_as_diffusers_documents(sdxl, family_checkpoints, tmp_path,
                                                                        tmp_path_factory):
    path = sdxl_file(tmp_path / "xl.safetensors")
    embedding = load_embedding(path, "xl")
    assert set(embedding.sets) == {"clip_l", "clip_g"} and embedding.num_vectors == 2

    config = write_sdxl_config_folder(tmp_path_factory.mktemp("sdxl-config"), refiner=False)
    pipe = from_single_file(StableDiffusionXLPipeline, family_checkpoints[SDXL_NAME], config, add_watermarker=False)
    # As diffusers documents for SDXL embeddings: clip_g into text_encoder_2, clip_l into text_encoder.
    load_textual_inversion(pipe, embedding.sets["clip_g"].clone(), "<xl>", text_encoder=pipe.text_encoder_2,
                           tokenizer=pipe.tokenizer_2)
    load_textual_inversion(pipe, embedding.sets["clip_l"].clone(), "<xl>", text_encoder=pipe.text_encoder,
                           tokenizer=pipe.tokenizer)

    ours, pooled = encode_text(sdxl.text_encoders, sdxl.family.spec, "a red circle, embedding:xl, top left",
                               embeddings={"xl": embedding})
    with torch.no_grad():
        theirs, _, their_pooled, _ = pipe.encode_prompt("a red circle, <xl>, top left", device=CPU,
                                                        num_images_per_prompt=1, do_classifier_free_guidance=False)
    context_error, pooled_error = relative_error(ours, theirs), relative_error(pooled, their_pooled)
    print(f"SDXL: context {context_error:.3g}, pooled {pooled_error:.3g}")
    assert context_error <= TEXT_RTOL and pooled_error <= TEXT_RTOL
    plain, plain_pooled = encode_text(sdxl.text_encoders, sdxl.family.spec, "a red circle, , top left")
    assert relative_error(plain, theirs) > 0.1 and relative_error(plain_pooled, their_pooled) > 0.1

    # Swapped sets (clip_l's vectors to bigG...) cannot be fed: the widths say which is which.
    swapped = Embedding("xl", "xl.safetensors", {"clip_l": embedding.sets["clip_g"], "clip_g": embedding.sets["clip_l"]})
    swapped_context, _ = encode_text(sdxl.text_encoders, sdxl.family.spec, "a red circle, embedding:xl, top left",
                                     embeddings={"xl": swapped})
    assert torch.equal(swapped_context, ours)


def test_sd2_single_set_goes_to_its_openclip_encoder(family_checkpoints, tmp_path, tmp_path_factory):
    loaded = load_checkpoint(family_checkpoints[SD2_NAME])
    assert [e.name for e in loaded.family.spec.text_encoders] == ["openclip_h"]
    path = tmp_path / "toy.pt"
    write_a1111_pt(path, vectors(2, 64, seed=7))
    embedding = load_embedding(path, "toy", allow_pickle=True)

    pipe = from_single_file(StableDiffusionPipeline, family_checkpoints[SD2_NAME],
                            write_sd2_config_folder(tmp_path_factory.mktemp("sd2-config")))
    load_textual_inversion(pipe, str(path), "<toy>")
    ours, _ = encode_text(loaded.text_encoders, loaded.family.spec, "a lighthouse, embedding:toy",
                          embeddings={"toy": embedding})
    # SD2 pads with 0 ("!") after the end token; the vectors' positions hold the placeholder id.
    error = relative_error(ours, their_context(pipe, "a lighthouse, <toy>"))
    print(f"SD2: relative error {error:.3g}")
    assert error <= TEXT_RTOL


def test_an_embedding_that_fits_no_encoder_is_refused_naming_the_widths(tiny_sd15, sdxl):
    wide = Embedding("wide", "wide.safetensors", {"*": vectors(1, 96, seed=8)})
    with pytest.raises(EmbeddingError) as error:
        encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "a embedding:wide cat", embeddings={"wide": wide})
    assert str(error.value) == (
        "embedding 'wide' (wide.safetensors) has 1 vector 96 wide, which does not fit this model: the model's text "
        "encoder is clip_l (64 wide); it was trained for another model family")

    # An SD1.x-style embedding on SDXL: CLIP-L's width, nothing for bigG.
    sd1_style = Embedding("toy", "toy.pt", {"*": vectors(2, 64, seed=9)})
    with pytest.raises(EmbeddingError) as error:
        encode_text(sdxl.text_encoders, sdxl.family.spec, "embedding:toy", embeddings={"toy": sd1_style})
    assert str(error.value) == (
        "embedding 'toy' (toy.pt) has 2 vectors 64 wide, which does not fit this model: the model's text encoders "
        "are clip_l (64 wide), clip_g (128 wide), and clip_g gets none (an embedding for this model has vectors for "
        "each of them); it was trained for another model family")

    # An SDXL file whose clip_g is missing.
    half = Embedding("half", "half.safetensors", {"clip_l": vectors(2, 64, seed=10)})
    with pytest.raises(EmbeddingError, match=r"has 2 vectors: clip_l 64 wide, which does not fit .* clip_g gets none"):
        encode_text(sdxl.text_encoders, sdxl.family.spec, "embedding:half", embeddings={"half": half})
    # ... but the SDXL file's clip_l set serves an SD1.x model by name.
    xl = Embedding("xl", "xl.safetensors", {"clip_l": vectors(2, 64, seed=11), "clip_g": vectors(2, 128, seed=12)})
    assert xl.vectors_for([("clip_l", 64)])["clip_l"] is xl.sets["clip_l"]
    assert xl.vectors_for([("clip_g", 128)])["clip_g"] is xl.sets["clip_g"]  # the refiner's bigG


# ---------------------------------------------------------------------------------------------
# Emphasis and windows


def test_a_weighted_embedding_follows_the_comfy_emphasis_formula(tiny_sd15):
    toy = {"toy": Embedding("toy", "toy.safetensors", {"*": vectors(3, 64, seed=13)})}
    encoders, spec = tiny_sd15.text_encoders, tiny_sd15.family.spec
    weighted, _ = encode_text(encoders, spec, "a photo of (embedding:toy:1.2) cat", embeddings=toy)
    plain, _ = encode_text(encoders, spec, "a photo of embedding:toy cat", embeddings=toy)
    empty, _ = encode_text(encoders, spec, "")
    # positions: BOS a photo of [toy toy toy] cat EOS: the vectors at 4-6 are weighted
    expected = plain.clone()
    expected[:, 4:7] = empty[:, 4:7] + (plain[:, 4:7] - empty[:, 4:7]) * 1.2
    assert torch.allclose(weighted, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(weighted[:, 4:7], plain[:, 4:7], atol=1e-3)

    tokens = tokenize_prompt("a (embedding:toy) [embedding:toy] ((embedding:toy:0.5))", embeddings=toy)
    weights = tokens.weights[0]
    assert torch.allclose(weights[2:5], torch.tensor(1.1)) and torch.allclose(weights[5:8], torch.tensor(1 / 1.1))
    assert torch.allclose(weights[8:11], torch.tensor(0.55)) and weights[1] == 1.0


def test_an_embedding_that_does_not_fit_the_window_starts_the_next_one():
    toy = {"toy": fake("toy", 3)}
    a = 320  # "a"
    # 72 tokens + 3 vectors = 75: the window is full, one window.
    tokens = tokenize_prompt("a " * 72 + "embedding:toy", embeddings=toy)
    assert tokens.ids.shape == (1, 77) and tokens.slots[0, 73:76].tolist() == [0, 1, 2] and tokens.ids[0, 76] == EOS_ID
    # 73 tokens + 3 vectors: the embedding moves whole to the next window (A1111's rule).
    tokens = tokenize_prompt("a " * 73 + "embedding:toy b", embeddings=toy)
    assert tokens.ids.shape == (2, 77) and tokens.token_count == 73 + 3 + 1
    assert tokens.ids[0].tolist() == [BOS_ID] + [a] * 73 + [EOS_ID] * 3
    assert (tokens.slots[0] == -1).all()
    assert tokens.slots[1, :6].tolist() == [-1, 0, 1, 2, -1, -1] and tokens.ids[1, 5] == EOS_ID
    # A comma close before a full window: the words after it move on, the embedding among them.
    tokens = tokenize_prompt("a " * 70 + ", embedding:toy b c", embeddings=toy)
    assert tokens.ids[0, 71] == 267 and tokens.ids[0, 72] == EOS_ID  # the comma ends window 1
    assert tokens.slots[1, 1:4].tolist() == [0, 1, 2] and tokens.ids[1, 6] == EOS_ID  # toy b c
    # A window of its own: encoded as if alone (each window goes through the text model on its own).
    with pytest.raises(EmbeddingError, match="76 vectors; at most 75"):
        parse_embedding({"emb_params": torch.zeros(76, 64)}, "huge", "huge.safetensors")


def test_windows_with_embeddings_encode_each_window_on_its_own(tiny_sd15):
    toy = {"toy": Embedding("toy", "toy.safetensors", {"*": vectors(3, 64, seed=14)})}
    encoders, spec = tiny_sd15.text_encoders, tiny_sd15.family.spec
    long, _ = encode_text(encoders, spec, "a " * 73 + "embedding:toy b", embeddings=toy)
    second, _ = encode_text(encoders, spec, "embedding:toy b", embeddings=toy)
    first, _ = encode_text(encoders, spec, "a " * 73)
    assert long.shape == (1, 154, 64)
    assert torch.allclose(long[:, :77], first, atol=1e-6) and torch.allclose(long[:, 77:], second, atol=1e-6)


def test_embedding_names_in_prompts():
    assert embedding_names("a (embedding:styles/ink:1.2) cat, embedding:bad-hands, embedding:styles/ink") == [
        "styles/ink", "bad-hands"]
    assert embedding_names("embedding:a.safetensors BREAK [embedding:b]") == ["a.safetensors", "b"]
    assert embedding_names("myembedding:x, embedding: y, embedding:,") == []  # not at a word start, or no name
    assert embedding_names("a photo") == []
    # Escaped brackets are text: "(embedding:x)" is not at a word start (ComfyUI splits on spaces too).
    assert embedding_names("\\(embedding:x\\)") == [] and embedding_names("\\(a\\) embedding:x") == ["x"]
    # A trailing comma is text, not part of the name.
    tokens = tokenize_prompt("embedding:toy, cat", embeddings={"toy": fake("toy", 1)})
    assert tokens.ids[0, :5].tolist() == [BOS_ID, EMBEDDING_PLACEHOLDER_ID, 267, 2368, EOS_ID]


def test_a_prompt_naming_an_embedding_without_a_lookup_is_an_error_not_text(tiny_sd15):
    with pytest.raises(EmbeddingNotFound, match=r"names embedding 'toy' \(embedding:toy\), but no embeddings"):
        tokenize_prompt("a embedding:toy cat")
    with pytest.raises(EmbeddingNotFound, match=r"no embedding named 'cat' \(embeddings given: 'toy'\)"):
        encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "embedding:cat", embeddings={"toy": fake("toy", 1)})


# ---------------------------------------------------------------------------------------------
# Files


def test_pickles_are_refused_unless_allowed_and_read_weights_only(tmp_path):
    value = vectors(2, 64, seed=15)
    path = write_a1111_pt(tmp_path / "old.pt", value)
    with pytest.raises(EmbeddingError) as error:
        load_embedding(path, "old")
    message = str(error.value)
    assert message.startswith("embedding 'old': old.pt is a pickle file (.pt). Pickle files can run arbitrary code")
    assert "--allow-pickle" in message
    assert torch.equal(load_embedding(path, "old", allow_pickle=True).sets["*"], value)

    # A pickle under a .safetensors name is recognised as one, and refused the same way.
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(EmbeddingError, match="disguised.safetensors is a PyTorch pickle file despite its name"):
        load_embedding(disguised, "disguised")
    assert torch.equal(load_embedding(disguised, "disguised", allow_pickle=True).sets["*"], value)

    # Objects other than tensors and plain containers: weights-only loading refuses them.
    torch.save({"string_to_param": {"*": value}, "trainer": Trainer()}, tmp_path / "evil.pt")
    with pytest.raises(EmbeddingError, match="holds Python objects other than tensors"):
        load_embedding(tmp_path / "evil.pt", "evil", allow_pickle=True)


class Trainer:  # an object a pickle may carry, which weights-only loading refuses
    pass


def test_files_that_are_not_embeddings_say_what_they_are(tmp_path):
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(4, 8), "lora_unet_a.lora_up.weight": torch.zeros(8, 4)},
              tmp_path / "lora.safetensors")
    with pytest.raises(EmbeddingError, match=r"embedding 'lora' \(lora.safetensors\) is not a textual-inversion "
                                             r"embedding: expected .* but it looks like a LoRA"):
        load_embedding(tmp_path / "lora.safetensors", "lora")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(EmbeddingError, match="not a readable safetensors file"):
        load_embedding(tmp_path / "cut.safetensors", "cut")
    with pytest.raises(EmbeddingError, match=r"different numbers of vectors per text encoder \(clip_l: 2, clip_g: 3\)"):
        parse_embedding({"clip_l": torch.zeros(2, 64), "clip_g": torch.zeros(3, 128)}, "x", "x.safetensors")
    with pytest.raises(EmbeddingError, match=r"emb_params holds torch.int64 numbers"):
        parse_embedding({"emb_params": torch.zeros(2, 64, dtype=torch.long)}, "x", "x.safetensors")
    with pytest.raises(EmbeddingError, match=r"emb_params is shaped \[1, 2, 64\]"):
        parse_embedding({"emb_params": torch.zeros(1, 2, 64)}, "x", "x.safetensors")
    with pytest.raises(EmbeddingError, match="NaN or infinite"):
        parse_embedding({"emb_params": torch.full((1, 64), float("nan"))}, "x", "x.safetensors")
    with pytest.raises(EmbeddingError, match="string_to_param holds 2 entries"):
        parse_embedding({"string_to_param": {"*": torch.zeros(1, 64), "x": torch.zeros(1, 64)}}, "x", "x.pt")


# ---------------------------------------------------------------------------------------------
# The clip_text_encode node


def embeddings_dir(executor) -> Path:
    folder = executor.services.folders.models / "embeddings"
    folder.mkdir(exist_ok=True)
    return folder


def encode_workflow(text, checkpoint: str = DEMO_NAME) -> dict:
    """A checkpoint loader and one clip_text_encode node ("prompt"), whose text is `text`
    (a literal) or, as {"linked": text}, a string_constant node's output."""
    nodes = {
        "checkpoint": {"type": "checkpoint_loader", "inputs": {"checkpoint": checkpoint}},
        "prompt": {"type": "clip_text_encode", "inputs": {"clip": {"node": "checkpoint", "output": "clip"}}},
    }
    if isinstance(text, dict):
        nodes["text"] = {"type": "string_constant", "inputs": {"value": text["linked"]}}
        nodes["prompt"]["inputs"]["text"] = {"node": "text", "output": "value"}
    else:
        nodes["prompt"]["inputs"]["text"] = text
    return {"format": "latentgraph/workflow@1", "nodes": nodes}


def conditioning(result) -> torch.Tensor:
    assert result.ok, result.errors
    return result.values["prompt"]["conditioning"].entries[0].embedding


def rewrite(path: Path, tensors: dict) -> None:
    """Replace an embedding file with new contents and a later modification time."""
    before = path.stat().st_mtime_ns
    save_file(tensors, path)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_the_node_reads_embeddings_from_the_folder_by_name_with_or_without_extension(sd_executor, tiny_sd15):
    folder = embeddings_dir(sd_executor)
    (folder / "styles").mkdir()
    toy, ink = vectors(2, 64, seed=16), vectors(1, 64, seed=17)
    save_file({"emb_params": toy}, folder / "toy.safetensors")
    save_file({"<ink>": ink[0]}, folder / "styles" / "ink.safetensors")
    text = "a red circle, (embedding:toy:1.1), embedding:styles/ink.safetensors"
    result = sd_executor.run(encode_workflow(text), outputs=["prompt"])
    expected, _ = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, text, embeddings={
        "toy": Embedding("toy", "toy.safetensors", {"*": toy}),
        "styles/ink.safetensors": Embedding("ink", "ink.safetensors", {"*": ink})})
    assert torch.equal(conditioning(result), expected)
    plain = conditioning(sd_executor.run(encode_workflow("a red circle, toy, ink"), outputs=["prompt"]))
    assert relative_error(plain, expected) > 0.1


def test_an_unknown_embedding_in_a_literal_prompt_is_a_validation_error(sd_executor):
    folder = embeddings_dir(sd_executor)
    save_file({"emb_params": vectors(1, 64, seed=18)}, folder / "toy.safetensors")
    write_a1111_pt(folder / "old.pt", vectors(1, 64, seed=19))
    with pytest.raises(WorkflowInvalid) as invalid:
        sd_executor.run(encode_workflow("a cat, embedding:toy, embedding:nope, embedding:../toy"), outputs=["prompt"])
    issues = invalid.value.issues
    assert [(i.node, i.input, i.code) for i in issues] == [("prompt", "text", "invalid_value")] * 2
    assert issues[0].message == (
        f"node 'prompt' (clip_text_encode) input 'text': no embedding named 'nope' (looked for nope, "
        f"nope.safetensors, nope.pt, nope.bin in {folder}); embeddings available: old, toy")
    assert issues[1].message.startswith(
        "node 'prompt' (clip_text_encode) input 'text': embedding name '../toy' is not allowed: '../toy': '..'")
    assert sd_executor.services.models.loads == 0  # nothing ran


def test_an_unknown_embedding_in_a_linked_prompt_fails_the_node_when_it_runs(sd_executor):
    embeddings_dir(sd_executor)
    result = sd_executor.run(encode_workflow({"linked": "a cat, embedding:nope"}), outputs=["prompt"])
    assert result.status == "failed" and result.executed == ["checkpoint", "text"]
    (failure,) = result.errors
    assert failure.node_id == "prompt" and failure.error_type == "EmbeddingNotFound"
    assert str(failure) == (
        f"node 'prompt' (clip_text_encode) failed: EmbeddingNotFound: no embedding named 'nope' (looked for nope, "
        f"nope.safetensors, nope.pt, nope.bin in {embeddings_dir(sd_executor)}); there are no embeddings in that folder")


def test_pickled_embeddings_need_allow_pickle(sd_executor, sd_folders, tiny_sd15):
    from latentgraph.engine import EventBus, Executor, OutputCache, registry

    value = vectors(2, 64, seed=20)
    write_a1111_pt(embeddings_dir(sd_executor) / "old.pt", value)
    refused = sd_executor.run(encode_workflow("embedding:old cat"), outputs=["prompt"])
    assert refused.status == "failed"
    assert "old.pt is a pickle file (.pt). Pickle files can run arbitrary code" in str(refused.errors[0])
    allowing = Executor(registry, OutputCache(1 << 30), services=Services(folders=sd_folders, allow_pickle=True),
                        events=EventBus())
    expected, _ = encode_text(tiny_sd15.text_encoders, tiny_sd15.family.spec, "embedding:old cat",
                              embeddings={"old": Embedding("old", "old.pt", {"*": value})})
    assert torch.equal(conditioning(allowing.run(encode_workflow("embedding:old cat"), outputs=["prompt"])), expected)


@pytest.mark.parametrize("linked", [False, True], ids=["literal text", "linked text"])
def test_the_node_encodes_again_when_an_embedding_file_changes(sd_executor, linked):
    folder = embeddings_dir(sd_executor)
    save_file({"emb_params": vectors(2, 64, seed=21)}, folder / "toy.safetensors")
    save_file({"emb_params": vectors(2, 64, seed=22)}, folder / "other.safetensors")
    workflow = encode_workflow({"linked": "a embedding:toy cat"} if linked else "a embedding:toy cat")
    first = sd_executor.run(workflow, outputs=["prompt"])
    again = sd_executor.run(workflow, outputs=["prompt"])
    assert "prompt" in first.executed and "prompt" in again.cached
    assert sd_executor.services.models.loads == 2  # the checkpoint and the embedding, each once

    rewrite(folder / "toy.safetensors", {"emb_params": vectors(2, 64, seed=23)})
    changed = sd_executor.run(workflow, outputs=["prompt"])
    assert "prompt" in changed.executed and "checkpoint" in changed.cached
    assert relative_error(conditioning(changed), conditioning(first)) > 0.1

    # A file the prompt does not name: a literal prompt stays cached; a linked one, whose names
    # are not known before it runs, encodes again.
    rewrite(folder / "other.safetensors", {"emb_params": vectors(2, 64, seed=24)})
    unrelated = sd_executor.run(workflow, outputs=["prompt"])
    assert ("prompt" in unrelated.executed) == linked
    assert torch.equal(conditioning(unrelated), conditioning(changed))

    # Prompts without embeddings keep the node's plain signature (no folder is read).
    from latentgraph.nodes.conditioning import ClipTextEncode

    assert ClipTextEncode.fingerprint({"text": "a cat"}, sd_executor.services) is None


def test_an_sdxl_embedding_through_the_node(family_executor, sdxl):
    folder = embeddings_dir(family_executor)
    path = sdxl_file(folder / "xl.safetensors")
    text = "a red circle, embedding:xl"
    result = family_executor.run(encode_workflow(text, SDXL_NAME), outputs=["prompt"])
    entry = result.values["prompt"]["conditioning"].entries[0]
    expected, pooled = encode_text(sdxl.text_encoders, sdxl.family.spec, text,
                                   embeddings={"xl": load_embedding(path, "xl")})
    assert torch.equal(entry.embedding, expected) and torch.equal(entry.pooled, pooled)
    # An SD1.x embedding on SDXL: the node fails naming the embedding and what the encoders need.
    save_file({"emb_params": vectors(1, 64, seed=25)}, folder / "sd1.safetensors")
    failed = family_executor.run(encode_workflow("embedding:sd1", SDXL_NAME), outputs=["prompt"])
    assert failed.status == "failed" and failed.errors[0].node_id == "prompt"
    assert "embedding 'sd1' (sd1.safetensors) has 1 vector 64 wide, which does not fit this model" in str(failed.errors[0])


def test_the_shipped_txt2img_workflow_samples_with_an_embedding(sd_executor):
    save_file({"emb_params": vectors(2, 64, seed=26)}, embeddings_dir(sd_executor) / "toy.safetensors")
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    document["nodes"]["positive"]["inputs"]["text"] = "a red circle, (embedding:toy:1.2)"
    document["nodes"]["sampler"]["inputs"]["steps"] = 2
    result = sd_executor.run(document)
    assert result.ok, result.errors
    assert result.results["save"]["images"][0]["filename"].endswith(".png")
