"""Latentgraph's node library (`latentgraph.nodes`) and, in `sd/`, the Stable Diffusion model code.

Importing this package registers nothing and loads no node module, so the model code in
`latentgraph.nodes.sd` imports without the nodes. `latentgraph.nodes.library` registers the
built-in nodes and loads plug-ins; the CLI and the server both go through it.
"""
