"""One router per resource of the HTTP API; `ALL` in the order the OpenAPI description lists them."""

from latentgraph.server.routes import comfyui, events, images, models, nodes, queue, runs, system, workflows

ALL = [runs.router, queue.router, nodes.router, images.router, models.router, workflows.router, system.router,
       events.router, comfyui.router]

__all__ = ["ALL"]
