"""OpenCLIP text towers in open_clip's layout, mapped onto transformers' CLIP models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from latentgraph.nodes.sd import open_clip
from latentgraph.nodes.sd.checkpoint import load_checkpoint
from latentgraph.nodes.sd.families import SD2
from latentgraph.nodes.sd.text_encoder import build_text_encoder
from sd_tiny import TINY_CLIP_G, TINY_OPENCLIP_H, randomize_, write_tiny_sd2_checkpoint

PREFIX = SD2.text_encoders[0].prefix


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@pytest.fixture(scope="module")
def sd2_file(tmp_path_factory):
    return write_tiny_sd2_checkpoint(tmp_path_factory.mktemp("sd2") / "sd2.safetensors")


def test_the_file_holds_open_clip_keys_with_packed_attention(sd2_file):
    tensors = load_file(sd2_file)
    keys = {k.removeprefix(PREFIX) for k in tensors if k.startswith(PREFIX)}
    block = {k.removeprefix("transformer.resblocks.0.") for k in keys if k.startswith("transformer.resblocks.0.")}
    assert block == {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                     "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                     "mlp.c_proj.weight", "mlp.c_proj.bias"}
    assert {"token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection",
            "logit_scale"} <= keys
    assert tensors[PREFIX + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 64, 64)
    assert open_clip.layer_count(tensors, PREFIX) == TINY_OPENCLIP_H.num_layers


def test_loading_splits_the_packed_attention_into_views_of_one_tensor(sd2_file):
    loaded = load_checkpoint(sd2_file)
    model = loaded.text_encoders["openclip_h"]
    attention = model.encoder.layers[1].self_attn
    q, k, v = attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight
    assert storage(q) == storage(k) == storage(v)  # one packed tensor, read once, never copied
    packed = load_file(sd2_file)[PREFIX + "transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(torch.cat([q, k, v]), packed)
    bias = load_file(sd2_file)[PREFIX + "transformer.resblocks.1.attn.in_proj_bias"]
    assert torch.equal(attention.k_proj.bias, bias[64:128])
    # Every parameter's bytes live once: the storages add up to the parameters.
    storages = {storage(p): p.untyped_storage().nbytes() for p in model.parameters()}
    assert sum(storages.values()) == sum(p.numel() * p.element_size() for p in model.parameters())


def test_to_open_clip_and_key_map_are_inverse_with_the_projection_transposed():
    model = randomize_(build_text_encoder(TINY_CLIP_G), 5)
    stored = open_clip.to_open_clip(model)
    assert stored["text_projection"].shape == (128, 128)
    state = model.state_dict()
    assert torch.equal(stored["text_projection"], state["text_projection.weight"].t())
    for key, source in open_clip.key_map(model, "").items():
        tensor = stored[source.file_key]
        if source.take is not None:
            tensor = source.take(tensor)
        assert torch.equal(tensor, state[key]), key
    assert len({s.file_key for s in open_clip.key_map(model, "").values()}) == len(stored)


def test_unknown_model_keys_are_refused():
    with pytest.raises(KeyError, match="no open_clip place"):
        open_clip.model_to_file("encoder.layers.0.something.weight", (4, 4), "")
