"""Latentgraph's built-in node library. Importing it registers its nodes with `engine.registry`.

Torch and the model code are imported when a Stable Diffusion node first runs, not here, so the
catalog and validation stay fast.
"""

from nodes import conditioning, images, latents, loaders, primitives, sampling  # noqa: F401
