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


def image(executor, folders, seed: int, results: list | None = None) -> np.ndarray:
    result = executor.run(txt2img(seed))
    assert result.ok, result.errors
    if results is not None:
        results.append(result.results)
    ref = result.results["save"]["images"][0]
    with Image.open(folders.outputs / ref["subfolder"] / ref["filename"]) as png:
        return np.asarray(png.convert("RGB"), dtype=np.int16)


def test_compiled_sampling_matches_eager_and_compiles_once_for_every_step_and_run(sd_folders) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = executor(sd_folders, compile=False)
    compiled = executor(sd_folders, compile=True)
    results: list = []
    first = image(compiled, sd_folders, 1, results)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 2  # the U-Net and the VAE's decoder were compiled, each as one graph ...
    # ... with their weights frozen in: convolutions and linears prepacked for oneDNN (what makes the
    # compiled U-Net faster than eager on the CPU; without freezing it was slower)
    assert counters["inductor"]["mkldnn_conv_weight_pack_matcher_count"] > 0
    assert counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"] > 0
    # ... and the nodes that paid for it say so, with the time it took
    (unet,) = results[0]["sampler"]["compiled"]
    (decoder,) = results[0]["decode"]["compiled"]
    assert (unet["model"], decoder["model"]) == ("UNetModel", "Decoder")
    assert unet["seconds"] > 0 and decoder["seconds"] > 0
    second = image(compiled, sd_folders, 2, results)
    assert counters["stats"]["unique_graphs"] == graphs  # ... once: not again per step, nor per run
    assert "sampler" not in results[1] and "decode" not in results[1]  # nothing compiled, nothing to report
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


def test_when_compiling_fails_the_run_goes_on_eagerly_and_says_why(sd_folders, monkeypatch) -> None:
    # No C++ compiler, an operator inductor cannot lower: the first call of a compiled forward
    # raises. The models then run eagerly (the same image), and the nodes' results say why.
    import latentgraph.nodes.sd.compiled as compiled_module

    def broken_compile(module, **options):
        def forward(*args, **kwargs):
            raise RuntimeError("InductorError: no C++ compiler found\nmore detail")
        return forward

    torch._dynamo.reset()
    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    monkeypatch.setattr(compiled_module, "_entries", compiled_module.weakref.WeakKeyDictionary())
    results: list = []
    got = image(executor(sd_folders, compile=True), sd_folders, 3, results)
    assert np.array_equal(got, image(executor(sd_folders, compile=False), sd_folders, 3))
    for node, model in (("sampler", "UNetModel"), ("decode", "Decoder")):
        assert results[0][node]["compiled"] == [{"model": model, "failed": "RuntimeError: InductorError: no C++ compiler found"}]


def test_a_new_image_size_compiles_once_more_and_says_so(sd_folders) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = executor(sd_folders, compile=True)
    noted = []
    for seed, size in enumerate((64, 96, 96, 64), start=1):
        document = txt2img(seed, steps=2)
        document["nodes"]["latent"]["inputs"].update(width=size, height=size)
        result = compiled.run(document)
        assert result.ok, result.errors
        noted.append(sorted(note["model"] for node in ("sampler", "decode")
                            for note in result.results.get(node, {}).get("compiled", [])))
        assert all("failed" not in note for node in result.results.values() for note in node.get("compiled", []))
    # One static graph per model and size (dynamo's automatic dynamic shapes stay off), none again.
    assert noted == [["Decoder", "UNetModel"], ["Decoder", "UNetModel"], [], []]
    assert counters["stats"]["unique_graphs"] == 4
    torch._dynamo.reset()


def test_a_compiled_forward_runs_at_its_thread_count_so_fitting_never_recompiles_it(monkeypatch) -> None:
    # dynamo guards on torch's thread count: the nodes' thread fitting (cpu_load) would make it
    # compile again at every change. The compiled forward sets its own count back; inside
    # full_threads() fitting leaves the count alone.
    from torch._dynamo.utils import counters

    from latentgraph.nodes import cpu_load
    from latentgraph.nodes.sd.compiled import compiled_models, forward_of
    from sd_tiny import TINY_UNET, randomize_
    from latentgraph.nodes.sd.unet import UNetModel

    torch._dynamo.reset()
    counters.clear()
    unet = randomize_(UNetModel(TINY_UNET), 0).eval()
    threads = torch.get_num_threads()
    with torch.inference_mode():
        inputs = (torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0]), torch.randn(2, 77, TINY_UNET.context_dim))
        with compiled_models(True):
            first = forward_of(unet)(*inputs)
            torch.set_num_threads(1)
            second = forward_of(unet)(*inputs)
            assert torch.get_num_threads() == threads
    assert counters["stats"]["unique_graphs"] == 1 and torch.allclose(first, second)
    monkeypatch.delenv("LATENTGRAPH_THREADS", raising=False)
    monkeypatch.setattr(cpu_load.monitor(), "free_cores", lambda: 1)
    assert cpu_load.fit_threads() == 1 and torch.get_num_threads() == 1  # fitted outside ...
    with cpu_load.full_threads() as full:
        assert full == torch.get_num_threads() >= 1
        assert cpu_load.fit_threads() == full  # ... not inside
    torch.set_num_threads(threads)
    torch._dynamo.reset()


def test_without_memory_for_the_frozen_weights_a_size_runs_eagerly_and_says_why(sd_folders, monkeypatch) -> None:
    # Each compiled size holds a prepacked copy of the weights (freezing): where that would not fit
    # in the memory free now, the model runs eagerly at that size, and the nodes' results say so.
    from torch._dynamo.utils import counters

    import latentgraph.nodes.sd.compiled as compiled_module

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(compiled_module, "_free_cpu_memory", lambda: 1 << 20)  # 1 MiB free
    results: list = []
    got = image(executor(sd_folders, compile=True), sd_folders, 4, results)
    assert np.array_equal(got, image(executor(sd_folders, compile=False), sd_folders, 4))
    assert counters["stats"]["unique_graphs"] == 0
    for node, model in (("sampler", "UNetModel"), ("decode", "Decoder")):
        (note,) = {str(n): n for n in results[0][node]["compiled"]}.values()  # once per run, not per step
        assert note["model"] == model and note["eager"].startswith("compiling for this size would need about ")
        assert note["eager"].endswith("GiB, 0.0 GiB is free")
