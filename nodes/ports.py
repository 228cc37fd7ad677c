"""The node library's port types: the kinds of value its Stable Diffusion nodes pass along links.

The engine knows only the primitives (INT, FLOAT, STRING, BOOLEAN) and ANY; these are registered
with it here, when the node library loads. Node modules use `ports.X` from this module for both.
"""

from __future__ import annotations

from latentgraph.engine.ports import ANY, BOOLEAN, FLOAT, INT, STRING, register_port_type

MODEL = register_port_type("MODEL")  # a diffusion model (DiffusionModel)
CLIP = register_port_type("CLIP")  # the text encoders of a checkpoint (TextEncoder)
VAE = register_port_type("VAE")  # an autoencoder (Vae)
CONDITIONING = register_port_type("CONDITIONING")  # encoded prompts (Conditioning)
LATENT = register_port_type("LATENT")  # latents (Latent)
IMAGE = register_port_type("IMAGE")  # float32 [B, H, W, 3] in [0, 1]
MASK = register_port_type("MASK")  # float32 [B, H, W] in [0, 1]
NOISE = register_port_type("NOISE")  # seeded starting noise (Noise)
SIGMAS = register_port_type("SIGMAS")  # a schedule of noise levels
SAMPLER = register_port_type("SAMPLER")  # a sampler and its options (SamplerChoice)
GUIDER = register_port_type("GUIDER")  # a model with its prompts and guidance scale (Guider)
CONTROL_NET = register_port_type("CONTROL_NET")  # a loaded ControlNet (controlnet.ControlNetHandle)
UPSCALE_MODEL = register_port_type("UPSCALE_MODEL")  # a loaded upscale model (upscale.UpscaleModel)

__all__ = ["ANY", "BOOLEAN", "CLIP", "CONDITIONING", "CONTROL_NET", "FLOAT", "GUIDER", "IMAGE", "INT", "LATENT", "MASK", "MODEL", "NOISE",
           "SAMPLER", "SIGMAS", "STRING", "UPSCALE_MODEL", "VAE"]
