"""`--compile` (nodes/sd/compiled.py): the U-Net compiled once per model, size and weights, with
the same images as eager, no recompile per step or per run, and a weight change recompiled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentgraph.nodes.services import Services

ROOT = Path(__file__).resolve().parent.parent


def executor(folders, compile: bool):
    import latentgraph.nodes.library  # noqa: F401
    from latentgraph.engine import EventBus, Executor, OutputCache, registry

    return Executor(registry, OutputCache(1 << 30), services=Services(folders=folders, device="cpu", compile=compile),
                    events=EventBus())


def txt2img(seed: int, steps: int = 4) -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    document["nodes"]["sampler"]["inputs"].update(seed=seed, steps=steps)
    return document


def image(executor, folders, seed: int) -> np.ndarray:
    result = executor.run(txt2img(seed))
    assert result.ok, result.errors
    ref = result.results["save"]["images"][0]
    with Image.open(folders.outputs / ref["subfolder"] / ref["filename"]) as png:
        return np.asarray(png.convert("RGB"), dtype=np.int16)


def test_compiled_sampling_matches_eager_and_compiles_once_for_every_step_and_run(sd_folders) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = executor(sd_folders, compile=False)
    compiled = executor(sd_folders, compile=True)
    first = image(compiled, sd_folders, 1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the U-Net was compiled ...
    second = image(compiled, sd_folders, 2)
    assert counters["stats"]["unique_graphs"] == graphs  # ... once: not again per step, nor per run
    for seed, got in ((1, first), (2, second)):
        assert np.abs(got - image(eager, sd_folders, seed)).max() <= 2  # rounding apart, the same image
    torch._dynamo.reset()


def test_a_weight_change_such_as_a_lora_switch_is_compiled_in_never_ignored() -> None:
    # On the CPU the compiled U-Net has its weights frozen in; a LoRA switch changes them in place
    # and bumps the module's PatchState.generation, which makes forward_of compile afresh.
    from latentgraph.nodes.sd.compiled import compiled_models, forward_of
    from latentgraph.nodes.sd.patches import patch_state
    from latentgraph.nodes.sd.unet import UNetConfig, UNetModel  # noqa: F401
    from sd_tiny import TINY_UNET, randomize_

    torch._dynamo.reset()
    unet = randomize_(UNetModel(TINY_UNET), 0).eval()
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(2, 4, 16, 16, generator=generator), torch.tensor([500.0, 500.0]),
              torch.randn(2, 77, TINY_UNET.context_dim, generator=generator))
    with torch.inference_mode():
        assert forward_of(unet) is unet  # outside compiled_models(True): the module itself
        with compiled_models(True):
            before = forward_of(unet)(*inputs)
            for parameter in unet.parameters():  # every weight, convolutions and linears alike, in place
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
            patch_state(unet).generation += 1
            after = forward_of(unet)(*inputs)
        eager = unet(*inputs)
    assert torch.allclose(after, eager, atol=1e-4) and not torch.allclose(after, before, atol=1e-3)
    torch._dynamo.reset()
