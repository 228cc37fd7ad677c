"""Model families as specs, guidance in one U-Net call, and names written once.

* Every SD1.x fact (VAE scaling, preview colours, schedule constants) lives in
  `nodes/sd/families/sd1.py` only; detection classifies SD1/SD2/SDXL/refiner tables by spec; the
  loader, the sampler's previews and the schedule read the model's spec.
* `CFGDenoiser`: every prompt of both sides in ONE network call per step, weights normalised,
  token counts made equal by repetition (exact for attention), no negative pass at cfg = 1.
* Sampler and schedule names come from `nodes.sd.names` everywhere (registries, node choices).
* `encode_text` follows the spec's text encoders (layer, concatenation, pooled entry).
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from latentgraph.nodes.sd import samplers as samplers_module
from latentgraph.nodes.sd import schedules as schedules_module
from latentgraph.nodes.sd.checkpoint import open_tensor_file
from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser, GuidanceEntry
from latentgraph.nodes.sd.families import (
    FAMILIES,
    SD1,
    SD2,
    SDXL,
    SDXL_REFINER,
    detect_family,
    ensure_supported,
    family_named,
)
from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry, DiffusionModel
from latentgraph.nodes.sd.layout import UnsupportedCheckpoint
from latentgraph.nodes.sd.names import SAMPLER_NAMES, SCHEDULE_NAMES
from latentgraph.nodes.sd.prompt import encode_prompt, encode_text
from latentgraph.nodes.sd.sample import denoise_latents, guided_model
from latentgraph.nodes.sd.samplers import SAMPLERS, latent_preview
from latentgraph.nodes.sd.schedules import SCHEDULES, NoiseSchedule, karras_sigmas

ROOT = Path(__file__).resolve().parents[1]
SD1_MODULE = ROOT / "nodes" / "sd" / "families" / "sd1.py"
CODE_FOLDERS = ("nodes", "server", "engine", "latentgraph")


# ---------------------------------------------------------------------------------------------
# One place for SD1 facts

# Numbers as literals: not a digit or '.' just before, not a digit just after (so 0.0125 or
# 10.012 do not count); also their scientific spellings.
SD1_FACTS = {
    "VAE scaling factor 0.18215": r"(?<![\d.])0?\.18215(?!\d)|1\.8215e-0?1",
    "beta_start 0.00085": r"(?<![\d.])0?\.00085(?!\d)|8\.5e-0?4",
    "beta_end 0.012": r"(?<![\d.])0?\.012(?!\d)|1\.2e-0?2",
    "first preview colour 0.3512": r"(?<![\d.])0?\.3512(?!\d)",
}


def code_files() -> list[Path]:
    files = [path for folder in CODE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50 and SD1_MODULE in files  # the scan really covers the code
    return files


@pytest.mark.parametrize("fact", sorted(SD1_FACTS))
def test_each_sd1_fact_is_written_in_the_sd1_module_only(fact):
    pattern = re.compile(SD1_FACTS[fact])
    found = sorted(str(path.relative_to(ROOT)) for path in code_files()
                   if path != SD1_MODULE and pattern.search(path.read_text(encoding="utf-8")))
    assert found == [], f"{fact} is written outside nodes/sd/families/sd1.py: {found}"
    assert pattern.search(SD1_MODULE.read_text(encoding="utf-8")), f"{fact} missing from sd1.py"


def test_the_sd1_spec_holds_the_published_sd1_numbers():
    assert SD1.latent.scaling_factor == 0.18215 and SD1.latent.channels == 4
    assert SD1.latent.rgb_factors[0] == (0.3512, 0.2297, 0.3227)
    assert (SD1.schedule.beta_start, SD1.schedule.beta_end, SD1.schedule.timesteps) == (0.00085, 0.012, 1000)
    # The built schedule is the scaled-linear one: betas linear in sqrt from 0.00085 to 0.012.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    expected = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    assert torch.allclose(SD1.schedule.build().sigmas, expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# Detection

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
SD1_TE = "cond_stage_model.transformer.text_model."


def minimal_tables() -> dict[str, dict[str, tuple[int, ...]]]:
    """The smallest key tables that tell each family apart (U-Net stem + text encoder keys)."""
    unet = {UNET_KEY: (320, 4, 3, 3)}
    label_emb = {"model.diffusion_model.label_emb.0.0.weight": (1280, 2816)}
    return {
        "sd1": {**unet, SD1_TE + "embeddings.token_embedding.weight": (49408, 768)},
        "sd2": {**unet, "cond_stage_model.model.token_embedding.weight": (49408, 1024)},
        "sdxl": {**unet, **label_emb,
                 "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
                 "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280)},
        "sdxl_refiner": {**unet, "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
                         "conditioner.embedders.0.model.token_embedding.weight": (49408, 1280)},
    }


@pytest.fixture(scope="module")
def tiny_shapes(tiny_sd15_checkpoint) -> dict[str, tuple[int, ...]]:
    with open_tensor_file(tiny_sd15_checkpoint) as source:
        return dict(source.shapes)


def test_the_tiny_sd1_checkpoint_is_detected_as_the_sd1_spec(tiny_shapes):
    family = detect_family(tiny_shapes)
    assert family.spec is SD1 and family.name == "sd1" and family.label == SD1.label
    ensure_supported(family)  # no error
    assert family.vae.scaling_factor == SD1.latent.scaling_factor
    assert family.prediction_type == "epsilon"
    assert family.unet.num_heads == SD1.unet_heads["num_heads"] == 8
    assert family.text_encoder.hidden_size == family.unet.context_dim == 64


@pytest.mark.parametrize("name, spec", [("sd1", SD1), ("sd2", SD2), ("sdxl", SDXL), ("sdxl_refiner", SDXL_REFINER)])
def test_each_family_table_is_claimed_first_by_its_own_spec(name, spec):
    table = minimal_tables()[name]
    claiming = [s for s in FAMILIES if s.detect(table)]
    assert claiming and claiming[0] is spec, [s.name for s in claiming]


def test_each_tiny_family_checkpoint_is_detected_with_its_specs_facts(family_checkpoints):
    from conftest import SD2_BASE_NAME, SD2_NAME, SDXL_NAME, SDXL_REFINER_NAME

    expected = {SD2_NAME: (SD2, "v_prediction", "the weights"), SD2_BASE_NAME: (SD2, "epsilon", "the weights"),
                SDXL_NAME: (SDXL, "epsilon", "the family's default"),
                SDXL_REFINER_NAME: (SDXL_REFINER, "epsilon", "the family's default")}
    for name, (spec, prediction, source) in expected.items():
        with open_tensor_file(family_checkpoints[name]) as tensors:
            family = detect_family(tensors.shapes, read=tensors.read, source=name)
        assert family.spec is spec and spec.supported
        assert (family.prediction_type, family.prediction_source) == (prediction, source), name
        assert family.vae.scaling_factor == spec.latent.scaling_factor  # the family's, not SD1's
        assert family.unet.num_head_channels == 64 and family.unet.use_linear_in_transformer
        assert family.unet.upcast_attention == (spec is SD2)
        assert [c.hidden_act for c in family.text_encoders] == [e.hidden_act for e in spec.text_encoders]
        assert not family.zero_terminal_snr


def test_v_pred_and_ztsnr_keys_mark_v_prediction_fine_tunes(tmp_path):
    from sd_tiny import write_tiny_sdxl_checkpoint

    path = write_tiny_sdxl_checkpoint(tmp_path / "vpred.safetensors", markers=("v_pred", "ztsnr"))
    with open_tensor_file(path) as tensors:
        family = detect_family(tensors.shapes, read=tensors.read)
        assert (family.prediction_type, family.prediction_source) == ("v_prediction", "the file's v_pred key")
        assert family.zero_terminal_snr
        # The caller still wins.
        assert detect_family(tensors.shapes, prediction_type="epsilon").prediction_type == "epsilon"


def test_a_family_marked_unsupported_is_refused_by_label(tiny_shapes):
    unsupported = replace(SD1, supported=False)
    family = replace(detect_family(tiny_shapes), spec=unsupported)
    with pytest.raises(UnsupportedCheckpoint) as raised:
        ensure_supported(family, source="model.safetensors")
    assert raised.value.family == "sd1"
    assert "model.safetensors is a Stable Diffusion 1.x checkpoint" in str(raised.value)


def test_an_sd2_unclip_table_is_sd2_not_the_sdxl_refiner(family_checkpoints):
    # SD2.1 unCLIP checkpoints have a label_emb (the image embedding) beside SD2's OpenCLIP text
    # encoder; a U-Net label_emb alone must not make a file "SDXL".
    from conftest import SD2_NAME

    with open_tensor_file(family_checkpoints[SD2_NAME]) as tensors:
        table = {**tensors.shapes, "model.diffusion_model.label_emb.0.0.weight": (256, 2048)}
    assert [s for s in FAMILIES if s.detect(table)][0] is SD2
    # ... and refused as what it is: the image-embedding input is not built.
    with pytest.raises(UnsupportedCheckpoint, match=r"unclip\.safetensors is a Stable Diffusion 2\.x checkpoint whose "
                                                    r"U-Net also reads a 2048-wide vector \(label_emb\), as unCLIP"):
        detect_family(table, source="unclip.safetensors")


def test_families_are_ordered_most_specific_first_and_named_uniquely():
    assert FAMILIES[-1] is SD1  # the plainest test (one text encoder prefix) goes last
    assert FAMILIES.index(SDXL) < FAMILIES.index(SDXL_REFINER)  # refiner = "XL but not base"
    assert FAMILIES.index(SDXL_REFINER) < FAMILIES.index(SD2)
    names = [spec.name for spec in FAMILIES]
    assert len(set(names)) == len(names) and len({spec.label for spec in FAMILIES}) == len(FAMILIES)
    assert all(family_named(name) is spec for name, spec in zip(names, FAMILIES))
    with pytest.raises(KeyError, match="sd3"):
        family_named("sd3")
    assert [spec.name for spec in FAMILIES if spec.supported] == ["sdxl", "sdxl_refiner", "sd2", "sd1"]


@pytest.mark.parametrize("spec", FAMILIES, ids=lambda s: s.name)
def test_every_spec_is_consistent(spec):
    latent = spec.latent
    assert len(latent.rgb_factors) == latent.channels == 4
    assert all(len(row) == 3 for row in latent.rgb_factors) and len(latent.rgb_bias) == 3
    assert latent.scaling_factor > 0
    names = [e.name for e in spec.text_encoders]
    assert len(set(names)) == len(names) and spec.text_encoders
    assert set(spec.lora_prefixes.values()) <= {"unet", *names}
    assert spec.prediction_type in ("epsilon", "v_prediction")
    assert sum(e.pooled for e in spec.text_encoders) <= 1


def test_sd2_shares_sd1_latents_and_schedule_while_sdxl_has_its_own_latents():
    assert SD2.latent is SD1.latent and SD2.schedule is SD1.schedule
    assert SDXL.latent is not SD1.latent and SDXL.latent.scaling_factor == 0.13025
    assert SDXL.latent.rgb_factors != SD1.latent.rgb_factors
    assert SDXL_REFINER.latent is SDXL.latent and SDXL.schedule is SD1.schedule
    assert [e.name for e in SDXL.text_encoders] == ["clip_l", "clip_g"]
    assert [e.pooled for e in SDXL.text_encoders] == [False, True]
    assert SD2.text_encoders[0].layer == "penultimate" and SD1.text_encoders[0].layer == "last"


# ---------------------------------------------------------------------------------------------
# Everything reads the spec


def checkpoint_workflow() -> dict:
    return {"format": "latentgraph/workflow@1",
            "nodes": {"checkpoint": {"type": "checkpoint_loader",
                                     "inputs": {"checkpoint": "latentgraph-demo.safetensors"}}}}


def test_the_checkpoint_loader_outputs_carry_the_sd1_spec_and_its_schedule(sd_executor):
    result = sd_executor.run(checkpoint_workflow(), outputs=["checkpoint"])
    assert result.ok, result.errors
    outputs = result.values["checkpoint"]
    model, clip, vae = outputs["model"], outputs["clip"], outputs["vae"]
    assert isinstance(model, DiffusionModel)
    assert model.spec is SD1 and model.family == "sd1" and clip.spec is SD1
    assert torch.equal(model.schedule.sigmas, SD1.schedule.build().sigmas)
    assert model.prediction_type == SD1.prediction_type and model.latent_channels == SD1.latent.channels
    assert list(clip.encoders) == [e.name for e in SD1.text_encoders] == ["clip_l"]
    assert vae.scaling_factor == SD1.latent.scaling_factor


def test_step_previews_only_when_someone_listens_and_on_a_gpu_at_most_every_interval(monkeypatch):
    from latentgraph.nodes import sampling

    made = []
    monkeypatch.setattr(samplers_module, "latent_preview", lambda latent, fmt: made.append(latent) or f"p{len(made)}")
    now = [0.0]
    monkeypatch.setattr(sampling.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sampling, "REFIT_THREADS", float("inf"))  # no thread fitting in this test
    model = SimpleNamespace(spec=SD1)

    def steps(device: str, listened: bool) -> list[object]:
        seen = []
        ctx = SimpleNamespace(progress=lambda step, total, preview=None: seen.append(preview), wants_previews=listened)
        report = sampling._step_reporter(ctx, model)
        latent = torch.zeros(1, 4, 2, 2, device=device)
        for step, at in enumerate([0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9], start=1):  # seconds at each step
            now[0] = at
            report(step, 8, latent)
        return seen

    assert steps("cpu", listened=False) == [None] * 8 and made == []  # nobody listens: no preview made
    assert steps("cpu", listened=True) == [f"p{i}" for i in range(1, 9)]  # the CPU: every step
    made.clear()
    # "meta" stands for an asynchronous device (a preview waits for it): steps at 0, 0.3, 0.6 s (0.25 s
    # apart at least) and the last one.
    assert steps("meta", listened=True) == ["p1", None, None, "p2", "p3", None, None, "p4"]


def test_the_sampler_previews_in_the_model_specs_latent_format():
    from latentgraph.nodes.sampling import _step_reporter

    # A made-up family whose preview maps channel 0 to (+1, -1, 0) and the others to nothing.
    custom = replace(SD1.latent, rgb_factors=((1.0, -1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    model = SimpleNamespace(spec=replace(SD1, latent=custom))
    seen = []
    ctx = SimpleNamespace(progress=lambda step, total, preview=None: seen.append((step, total, preview)),
                          wants_previews=True)
    latent = torch.zeros(1, 4, 2, 3)
    latent[0, 0] = 1.0
    latent[0, 1] = 0.7  # ignored by the custom map, not by SD1's
    _step_reporter(ctx, model)(1, 5, latent)
    (step, total, preview), = seen
    assert (step, total) == (1, 5) and preview.size == (3, 2)
    assert preview.getpixel((0, 0)) == (255, 0, 128)
    assert preview.tobytes() == latent_preview(latent, custom).tobytes()
    assert preview.tobytes() != latent_preview(latent, SD1.latent).tobytes()
    # The bias is applied too.
    biased = replace(custom, rgb_bias=(-1.0, 1.0, 0.5))
    assert latent_preview(torch.zeros(4, 1, 1), biased).getpixel((0, 0)) == (0, 255, 191)


# ---------------------------------------------------------------------------------------------
# Guidance


class RecordingNet:
    """A toy noise predictor (channel mix, timestep gain, softmax-attention-pooled context, and an
    optional y vector added per sample) that records the batch of every call."""

    def __init__(self, channels: int = 4, context_dim: int = 6, y_dim: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(channels, channels, generator=g, dtype=torch.float64) / channels**0.5
        self.query = torch.randn(context_dim, generator=g, dtype=torch.float64)
        self.to_channels = torch.randn(context_dim, channels, generator=g, dtype=torch.float64) * 0.5
        self.y_to_channels = torch.randn(y_dim, channels, generator=g, dtype=torch.float64) * 0.5
        self.y_dim = y_dim
        self.calls: list[dict] = []

    def __call__(self, x_in, t, context, y=None):
        self.calls.append({"batch": x_in.shape[0], "tokens": context.shape[1],
                           "y": None if y is None else tuple(y.shape)})
        assert context.shape[0] == x_in.shape[0] == t.shape[0]
        t, context = t.to(torch.float64).reshape(-1, 1, 1, 1), context.to(torch.float64)
        h = torch.einsum("oc,bchw->bohw", self.mix, x_in) * (1 + 0.5 * torch.sin(t / 300))
        weights = torch.softmax(context @ self.query, dim=1)
        pooled = torch.einsum("bk,bkd->bd", weights, context)
        h = h + (pooled @ self.to_channels).reshape(x_in.shape[0], -1, 1, 1)
        if y is not None:
            assert y.shape == (x_in.shape[0], self.y_dim)
            h = h + (y.to(torch.float64) @ self.y_to_channels).reshape(x_in.shape[0], -1, 1, 1)
        return 0.8 * x_in + 0.3 * torch.tanh(h)

    @property
    def batches(self) -> list[int]:
        return [call["batch"] for call in self.calls]


def context(batch: int, tokens: int, seed: int, dim: int = 6) -> torch.Tensor:
    return torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return SD1.schedule.build()


def latents(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 4, 3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    return x * 3, torch.tensor([4.0, 0.6][:batch], dtype=torch.float64)


def separately(denoiser, x, sigma, entry: GuidanceEntry) -> torch.Tensor:
    """One entry's estimate on its own, its context (and y) broadcast to the latent batch."""
    cond = entry.context.expand(x.shape[0], -1, -1)
    if entry.y is None:
        return denoiser(x, sigma, cond)
    return denoiser(x, sigma, cond, entry.y.expand(x.shape[0], -1))


def test_cfg_runs_every_prompt_in_one_call_and_equals_the_weighted_separate_passes(schedule):
    net = RecordingNet()
    denoiser = Denoiser(net, schedule)
    x, sigma = latents(2)
    positive = [GuidanceEntry(context(1, 77, 1), 1.0), GuidanceEntry(context(2, 77, 2), 3.0)]
    negative = [GuidanceEntry(context(1, 77, 3)), GuidanceEntry(context(1, 154, 4))]
    guided = CFGDenoiser(denoiser, positive, negative, 6.5)(x, sigma)
    assert net.calls == [{"batch": 4 * 2, "tokens": 154, "y": None}]

    net.calls.clear()
    cond = 0.25 * separately(denoiser, x, sigma, positive[0]) + 0.75 * separately(denoiser, x, sigma, positive[1])
    uncond = 0.5 * separately(denoiser, x, sigma, negative[0]) + 0.5 * separately(denoiser, x, sigma, negative[1])
    assert net.batches == [2, 2, 2, 2] and [c["tokens"] for c in net.calls] == [77, 77, 77, 154]
    expected = uncond + 6.5 * (cond - uncond)
    assert torch.allclose(guided, expected, rtol=0, atol=1e-10)
    # Not trivially so: the prompts do pull apart, and the weights matter.
    equal_weights = 0.5 * separately(denoiser, x, sigma, positive[0]) + 0.5 * separately(denoiser, x, sigma, positive[1])
    assert (uncond + 6.5 * (equal_weights - uncond) - guided).abs().max() > 1e-3


def test_cfg_repeats_tokens_instead_of_padding(schedule):
    # 77 and 154 become 154 by repeating the short context twice; zero padding would change the
    # toy's attention pooling and so the result.
    net = RecordingNet()
    denoiser = Denoiser(net, schedule)
    x, sigma = latents(1)
    short, long = context(1, 77, 5), context(1, 154, 6)
    guided = CFGDenoiser(denoiser, [GuidanceEntry(long)], [GuidanceEntry(short)], 3.0)(x, sigma)
    repeated = denoiser(x, sigma, short.repeat(1, 2, 1))
    padded = denoiser(x, sigma, torch.cat([short, torch.zeros_like(short)], dim=1))
    cond = denoiser(x, sigma, long)
    assert torch.allclose(guided, repeated + 3.0 * (cond - repeated), rtol=0, atol=1e-10)
    assert (guided - (padded + 3.0 * (cond - padded))).abs().max() > 1e-3
    # Token counts that do not divide: lcm(77, 154 + 77) = 231.
    net.calls.clear()
    CFGDenoiser(denoiser, [GuidanceEntry(context(1, 231, 7))], [GuidanceEntry(short)], 2.0)(x, sigma)
    assert net.calls[0]["tokens"] == 231


def test_cfg_one_computes_only_the_positive_prompts(schedule):
    net = RecordingNet()
    denoiser = Denoiser(net, schedule)
    x, sigma = latents(2)
    positive = [GuidanceEntry(context(1, 77, 1), 1.0), GuidanceEntry(context(1, 154, 2), 3.0)]
    negative = [GuidanceEntry(context(1, 77, 3)), GuidanceEntry(context(1, 77, 4))]
    guided = CFGDenoiser(denoiser, positive, negative, 1.0)(x, sigma)
    assert net.batches == [2 * 2]
    net.calls.clear()
    expected = 0.25 * separately(denoiser, x, sigma, positive[0]) + 0.75 * separately(denoiser, x, sigma, positive[1])
    assert torch.allclose(guided, expected, rtol=0, atol=1e-10)
    # No negative at all: the same.
    net.calls.clear()
    assert torch.allclose(CFGDenoiser(denoiser, positive, None, 7.0)(x, sigma), expected, rtol=0, atol=1e-10)
    assert net.batches == [2 * 2]
    # One positive prompt at cfg 1: one plain call on the latent batch.
    net.calls.clear()
    CFGDenoiser(denoiser, positive[:1], negative, 1.0)(x, sigma)
    assert net.batches == [2]


def test_cfg_batches_each_prompts_y_in_the_same_order(schedule):
    net = RecordingNet()
    denoiser = Denoiser(net, schedule)
    x, sigma = latents(2)
    y = lambda seed, batch=1: torch.randn(batch, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    positive = [GuidanceEntry(context(1, 77, 1), 2.0, y(11)), GuidanceEntry(context(1, 77, 2), 1.0, y(12, 2))]
    negative = [GuidanceEntry(context(1, 77, 3), 1.0, y(13))]
    guided = CFGDenoiser(denoiser, positive, negative, 5.0)(x, sigma)
    assert net.calls == [{"batch": 3 * 2, "tokens": 77, "y": (3 * 2, 3)}]
    net.calls.clear()
    cond = (2 * separately(denoiser, x, sigma, positive[0]) + separately(denoiser, x, sigma, positive[1])) / 3
    uncond = separately(denoiser, x, sigma, negative[0])
    assert torch.allclose(guided, uncond + 5.0 * (cond - uncond), rtol=0, atol=1e-10)
    # The y vectors matter (swapping the positives' y changes the result).
    swapped = [replace(positive[0], y=y(12)), replace(positive[1], y=y(11, 2))]
    assert (CFGDenoiser(denoiser, swapped, negative, 5.0)(x, sigma) - guided).abs().max() > 1e-3


def test_cfg_refuses_mixed_y_and_strengths_adding_to_zero(schedule):
    denoiser = Denoiser(RecordingNet(), schedule)
    x, sigma = latents(2)
    with_y = GuidanceEntry(context(1, 77, 1), 1.0, torch.zeros(1, 3, dtype=torch.float64))
    without_y = GuidanceEntry(context(1, 77, 2))
    with pytest.raises(ValueError, match=r"extra conditioning \(y\)"):
        CFGDenoiser(denoiser, [with_y], [without_y], 5.0)(x, sigma)
    with pytest.raises(ValueError, match=r"extra conditioning \(y\)"):
        CFGDenoiser(denoiser, [with_y, without_y], None, 1.0)(x, sigma)
    with pytest.raises(ValueError, match="positive prompts' strengths add up to 0"):
        CFGDenoiser(denoiser, [GuidanceEntry(context(1, 77, 1), 0.0), GuidanceEntry(context(1, 77, 2), 0.0)], None, 5.0)
    with pytest.raises(ValueError, match="negative prompts' strengths add up to 0"):
        CFGDenoiser(denoiser, [without_y], [GuidanceEntry(context(1, 77, 3), 1.0),
                                            GuidanceEntry(context(1, 77, 4), -1.0)], 5.0)
    with pytest.raises(ValueError, match="positive conditioning is empty"):
        CFGDenoiser(denoiser, [], None, 5.0)


class ToyModel:
    """What guided_model reads of a DiffusionModel, around a RecordingNet (float64 in, float64 out)."""

    def __init__(self, schedule: NoiseSchedule):
        self.net = RecordingNet()
        self.schedule = schedule
        self.prediction_type = "epsilon"
        self.device = torch.device("cpu")
        self.latent_channels = 4
        self.spec = SD1  # no extra conditioning vector
        self.unet = SimpleNamespace(config=SimpleNamespace(context_dim=6, in_channels=4))
        self.source = "toy.safetensors"
        self.cfg_rescale = 0.0


def combined(a: Conditioning, b: Conditioning, strength_b: float) -> Conditioning:
    from latentgraph.nodes.conditioning import ConditioningCombine

    return ConditioningCombine(a=a, b=b, strength_b=strength_b).run(None).conditioning


def prompt(seed: int, tokens: int = 77) -> Conditioning:
    return Conditioning((ConditioningEntry(context(1, tokens, seed).float()),))


def test_guided_model_runs_combined_prompts_in_one_call_per_step(schedule):
    model = ToyModel(schedule)
    positive = combined(prompt(1), prompt(2, 154), 3.0)
    negative = combined(prompt(3), prompt(4), 1.0)
    assert [e.strength for e in positive.entries] == [1.0, 3.0]
    x, _ = latents(2)
    sigmas = karras_sigmas(schedule, 4).double()
    SAMPLERS["euler"](guided_model(model, positive, negative, 5.0), x * sigmas[0], sigmas)
    assert model.net.batches == [4 * 2] * 4
    # And the value of one step: the weighted CFG of the separate passes.
    model.net.calls.clear()
    guided = guided_model(model, positive, negative, 5.0)(x, torch.full((2,), 3.0, dtype=torch.float64))
    denoiser = Denoiser(model.net, schedule)
    s = torch.full((2,), 3.0, dtype=torch.float64)
    one = lambda e: separately(denoiser, x, s, GuidanceEntry(e.embedding.double()))
    cond = 0.25 * one(positive.entries[0]) + 0.75 * one(positive.entries[1])
    uncond = 0.5 * one(negative.entries[0]) + 0.5 * one(negative.entries[1])
    assert torch.allclose(guided, uncond + 5.0 * (cond - uncond), rtol=0, atol=1e-10)
    # cfg 1: only the positive prompts are computed.
    model.net.calls.clear()
    SAMPLERS["euler"](guided_model(model, positive, negative, 1.0), x * sigmas[0], sigmas)
    assert model.net.batches == [2 * 2] * 4
    with pytest.raises(ValueError, match="positive conditioning is empty"):
        guided_model(model, Conditioning(()), negative, 5.0)
    with pytest.raises(ValueError, match="strengths add up to 0"):
        guided_model(model, combined(replace_strength(prompt(1), 0.0), prompt(2), 0.0), negative, 5.0)


def replace_strength(conditioning: Conditioning, strength: float) -> Conditioning:
    return Conditioning(tuple(replace(e, strength=strength) for e in conditioning.entries))


class CountingUNet(nn.Module):
    """The shared tiny U-Net inside a module that counts forward calls (the shared one is not touched)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.inner = unet
        self.config = unet.config
        self.batches: list[int] = []

    def forward(self, x, t, context, **kwargs):
        self.batches.append(x.shape[0])
        return self.inner(x, t, context, **kwargs)


def test_the_real_unet_is_called_once_per_step_for_all_prompts(tiny_sd15):
    encoders, spec = tiny_sd15.text_encoders, tiny_sd15.family.spec
    with torch.inference_mode():
        long = encode_text(encoders, spec, ", ".join(["a red circle on a blue background"] * 12))[0]
        short = encode_text(encoders, spec, "a green square")[0]
        empty = encode_text(encoders, spec, "")[0]
        ugly = encode_text(encoders, spec, "blurry")[0]
    assert long.shape[1] == 154 and short.shape[1] == 77
    positive = combined(Conditioning((ConditioningEntry(long),)), Conditioning((ConditioningEntry(short),)), 0.5)
    negative = combined(Conditioning((ConditioningEntry(empty),)), Conditioning((ConditioningEntry(ugly),)), 1.0)
    unet = CountingUNet(tiny_sd15.unet)
    model = DiffusionModel(unet, spec, spec.schedule.build(), "epsilon", 4, "tiny")
    from latentgraph.nodes.sd.handles import Latent, Noise, SamplerChoice

    with torch.inference_mode():
        out = denoise_latents(model, positive, negative, Latent(torch.zeros(2, 4, 8, 8)), Noise(3),
                              karras_sigmas(model.schedule, 3), SamplerChoice("euler"), 7.0)
    assert unet.batches == [4 * 2] * 3 and torch.isfinite(out.samples).all()


# ---------------------------------------------------------------------------------------------
# Names written once


def defined_here(module, prefix: str = "", suffix: str = "") -> set[str]:
    return {name for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__
            and name.startswith(prefix) and name.endswith(suffix)}


def node_choices(node_type: str, input_name: str) -> list:
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import registry

    return registry.get(node_type).inputs[input_name].choices()


def test_sampler_names_are_the_registry_the_functions_and_the_node_choices():
    assert len(set(SAMPLER_NAMES)) == len(SAMPLER_NAMES)
    assert list(SAMPLERS) == list(SAMPLER_NAMES)
    functions = defined_here(samplers_module, prefix="sample_")
    assert functions == {f"sample_{name}" for name in SAMPLER_NAMES}  # none defined without being exposed
    assert all(SAMPLERS[name] is getattr(samplers_module, f"sample_{name}") for name in SAMPLER_NAMES)
    assert node_choices("ksampler", "sampler") == list(SAMPLER_NAMES)
    assert node_choices("sampler_select", "sampler") == list(SAMPLER_NAMES)
    from latentgraph.nodes.sampling import SamplerName, ScheduleName

    assert typing.get_args(SamplerName) == SAMPLER_NAMES and typing.get_args(ScheduleName) == SCHEDULE_NAMES


def test_schedule_names_are_the_registry_the_functions_and_the_node_choices():
    assert len(set(SCHEDULE_NAMES)) == len(SCHEDULE_NAMES)
    assert list(SCHEDULES) == list(SCHEDULE_NAMES)
    functions = defined_here(schedules_module, suffix="_sigmas")
    assert functions == {f"{name}_sigmas" for name in SCHEDULE_NAMES}
    assert node_choices("ksampler", "scheduler") == list(SCHEDULE_NAMES)
    assert node_choices("scheduler", "schedule") == list(SCHEDULE_NAMES)


def test_names_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, latentgraph.nodes.sd.names; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# encode_text follows the spec

TEXT = "a (red:1.3) circle, on a blue background"


def test_encode_text_for_sd1_is_the_single_encoder_encoding(tiny_sd15):
    encoders = tiny_sd15.text_encoders
    assert SD1.text_encoders[0].layer == "last" and list(encoders) == ["clip_l"]
    with torch.inference_mode():
        reference, reference_pooled = encode_prompt(None, encoders["clip_l"], TEXT)
        ours, pooled = encode_text(encoders, SD1, TEXT)
        assert torch.equal(ours, reference) and torch.equal(pooled, reference_pooled)
        assert ours.shape == (1, 77, 64) and pooled.shape == (1, 64)
        skip1 = encode_text(encoders, SD1, TEXT, clip_skip=1)
        assert torch.equal(skip1[0], ours) and torch.equal(skip1[1], pooled)
        skip2, pooled2 = encode_text(encoders, SD1, TEXT, clip_skip=2)
        assert torch.equal(skip2, encode_prompt(None, encoders["clip_l"], TEXT, clip_skip=2)[0])
        assert (skip2 - ours).abs().max() > 1e-3
        assert torch.equal(pooled2, pooled)  # the pooled vector is always the last layer's


def test_encode_text_follows_the_layer_the_spec_says(tiny_sd15):
    encoder = tiny_sd15.text_encoders["clip_l"]
    penultimate = replace(SD1, text_encoders=(replace(SD1.text_encoders[0], layer="penultimate", final_norm=False),))
    with torch.inference_mode():
        ours, _ = encode_text({"clip_l": encoder}, penultimate, TEXT)
        assert torch.equal(ours, encode_prompt(None, encoder, TEXT, clip_skip=2, final_norm=False)[0])
        assert not torch.equal(ours, encode_prompt(None, encoder, TEXT, clip_skip=2)[0])
        # clip_skip given overrides the spec's layer (1 = the last, still without the final norm).
        assert torch.equal(encode_text({"clip_l": encoder}, penultimate, TEXT, clip_skip=1)[0],
                           encode_prompt(None, encoder, TEXT, clip_skip=1, final_norm=False)[0])


@pytest.fixture(scope="module")
def second_encoder():
    """Another tiny CLIP text encoder (other weights), to tell two spec entries apart."""
    from sd_tiny import TINY_TEXT_ENCODER, randomize_

    from latentgraph.nodes.sd.text_encoder import build_text_encoder, finish_text_encoder

    model = randomize_(build_text_encoder(TINY_TEXT_ENCODER), seed=77)
    finish_text_encoder(model, "cpu")
    return model


def test_two_text_encoders_concatenate_and_the_pooled_entry_gives_the_pooled_vector(tiny_sd15, second_encoder):
    first_spec = SD1.text_encoders[0]
    two = replace(SD1, text_encoders=(first_spec, replace(first_spec, name="second")))
    first = tiny_sd15.text_encoders["clip_l"]
    with torch.inference_mode():
        single, single_pooled = encode_text({"clip_l": first}, SD1, TEXT)
        # The same encoder twice: twice the width, both halves the single encoding.
        doubled, pooled = encode_text({"clip_l": first, "second": first}, two, TEXT)
        assert doubled.shape == (1, 77, 128)
        assert torch.equal(doubled[..., :64], single) and torch.equal(doubled[..., 64:], single)
        assert torch.equal(pooled, single_pooled)

        # Two different encoders: in the spec's order; pooled from the entry marked pooled, else the first.
        encoders = {"clip_l": first, "second": second_encoder}
        other, other_pooled = encode_prompt(None, second_encoder, TEXT)
        assert (other_pooled - single_pooled).abs().max() > 1e-3
        both, pooled = encode_text(encoders, two, TEXT)
        assert torch.equal(both, torch.cat([single, other], dim=-1)) and torch.equal(pooled, single_pooled)
        marked = replace(two, text_encoders=(first_spec, replace(first_spec, name="second", pooled=True)))
        assert torch.equal(encode_text(encoders, marked, TEXT)[1], other_pooled)
        reversed_ = replace(two, text_encoders=(replace(first_spec, name="second"), replace(first_spec, pooled=True)))
        both_reversed, pooled = encode_text(encoders, reversed_, TEXT)
        assert torch.equal(both_reversed, torch.cat([other, single], dim=-1))
        assert torch.equal(pooled, single_pooled)
        # Long prompts: every encoder gives the same number of 77-token windows.
        long = ", ".join(["a red circle"] * 30)
        assert encode_text(encoders, two, long)[0].shape == (1, 154, 128)
