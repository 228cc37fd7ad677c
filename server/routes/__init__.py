"""One router per resource of the HTTP API; `ALL` in the order the OpenAPI description lists them."""

from latentgraph.server.routes import events, images, models, nodes, queue, runs, system, workflows

ALL = [runs.router, queue.router, nodes.router, images.router, models.router, workflows.router, system.router,
       events.router]

__all__ = ["ALL"]
