"""Latentgraph's built-in node library. Importing it registers its nodes with `engine.registry`."""

from nodes import primitives  # noqa: F401
