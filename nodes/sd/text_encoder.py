"""CLIP text encoders as transformers' CLIPTextModel (CLIPTextModelWithProjection where the
family uses the pooled, projected vector).

A family spec says where a checkpoint keeps each of its text encoders and in which layout: SD1.x's
OpenAI CLIP ViT-L/14 under `cond_stage_model.transformer.text_model.*` is in transformers' own
layout and loads as it is; OpenCLIP towers (SD2.x, SDXL) are mapped by `open_clip`.
transformers 5.x flattened CLIPTextModel (its own keys carry no `text_model.` prefix; older
versions, and CLIPTextModelWithProjection still, wrap everything in `.text_model`);
`model_key_prefix` tells which one a model is, and `file_key` maps its keys to the file's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

# The CLIP tokenizer's special tokens (vocabulary of 49408).
START_OF_TEXT = 49406
END_OF_TEXT = 49407


@dataclass(frozen=True)
class TextEncoderConfig:
    """Shape of a CLIP text encoder. Defaults are CLIP ViT-L/14's.

    hidden_size: token width, which is also the U-Net's context_dim (768).
    num_layers: transformer layers (12).
    intermediate_size: MLP width (3072).
    vocab_size: token embedding rows (49408).
    max_positions: position embedding rows, the longest token sequence (77).
    hidden_act: MLP activation; OpenAI's CLIP uses quick_gelu, OpenCLIP gelu.
    projection_dim: width of the text projection applied to the pooled vector (SDXL's bigG: 1280);
        0 builds a model without one.
    """

    hidden_size: int = 768
    num_layers: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 49408
    max_positions: int = 77
    hidden_act: str = "quick_gelu"
    projection_dim: int = 0

    @property
    def num_heads(self) -> int:
        """CLIP's heads are 64 channels wide (12 for ViT-L/14); at least one for tiny models."""
        return max(1, self.hidden_size // 64)

    def to_transformers(self) -> CLIPTextConfig:
        # Special-token ids only matter for the pooled output (taken at the first END_OF_TEXT);
        # a tiny test vocabulary may not hold them, so they are kept only where they fit.
        def token(token_id: int) -> int | None:
            return token_id if token_id < self.vocab_size else None

        return CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            max_position_embeddings=self.max_positions,
            hidden_act=self.hidden_act,
            projection_dim=self.projection_dim or self.hidden_size,
            layer_norm_eps=1e-5,
            bos_token_id=token(START_OF_TEXT),
            eos_token_id=token(END_OF_TEXT),
            pad_token_id=token(END_OF_TEXT),
            attn_implementation="sdpa",
        )


def build_text_encoder(config: TextEncoderConfig) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A CLIPTextModel of this shape in eval mode (CLIPTextModelWithProjection when the config has
    a projection). Build it under `torch.device("meta")` to get one without memory for weights,
    then fill it from a file and call `finish_text_encoder`."""
    model_class = CLIPTextModelWithProjection if config.projection_dim else CLIPTextModel
    return model_class(config.to_transformers()).eval().requires_grad_(False)


def model_key_prefix(model: CLIPTextModel) -> str:
    """'text_model.' where the installed transformers wraps the model in .text_model, else ''."""
    return "text_model." if hasattr(model, "text_model") else ""


def file_key(model: CLIPTextModel, model_key: str, prefix: str) -> str:
    """The checkpoint key for one of the model's state_dict keys."""
    return prefix + model_key.removeprefix(model_key_prefix(model))


def finish_text_encoder(model: CLIPTextModel, device: torch.device | str) -> None:
    """Recreate the `position_ids` buffer (0..max_positions-1) on `device`.

    transformers keeps it out of the state dict, so a model built on the meta device has none;
    files that do store it are ignored for it, because some merged checkpoints carry a drifted
    float copy (76.9998...) that would shift the position lookup.
    """
    embeddings = (model.text_model if hasattr(model, "text_model") else model).embeddings
    positions = embeddings.position_embedding.weight.shape[0]
    embeddings.register_buffer(
        "position_ids", torch.arange(positions, device=device).expand(1, -1), persistent=False
    )
