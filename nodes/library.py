"""The node library as a registry: the built-in node modules, then installed plug-ins.

Importing this module registers the built-in nodes with the engine's default registry (each
module's `@node` decorators do it); `load_registry()` adds the node libraries installed under the
`latentgraph.nodes` entry point. The CLI and the server both get their registry here. Torch and
the model code are imported when a Stable Diffusion node first runs, not here, so the catalog and
validation stay fast.
"""

from __future__ import annotations

from latentgraph.engine import NodeRegistry, registry
from latentgraph.nodes import conditioning, images, latents, loaders, primitives, sampling  # noqa: F401
from latentgraph.nodes import preprocessors  # noqa: F401
from latentgraph.nodes import controlnet  # noqa: F401
from latentgraph.nodes import inpaint  # noqa: F401
from latentgraph.nodes import image_ops, masks  # noqa: F401
from latentgraph.nodes import upscale  # noqa: F401

BUILTIN_MODULES = (primitives, loaders, conditioning, latents, sampling, images, preprocessors, controlnet, image_ops, masks,
                   inpaint, upscale)


def load_registry() -> NodeRegistry:
    """The built-in nodes plus every node library installed under the `latentgraph.nodes` entry point."""
    registry.load_entry_points()
    return registry


__all__ = ["BUILTIN_MODULES", "load_registry"]
