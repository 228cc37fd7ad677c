"""Latentgraph: a node-graph engine for Stable Diffusion (the application entry point)."""

__version__ = "0.1.0"
