"""The bundled demo model: a small SD1.x-architecture checkpoint trained on coloured shapes.

`dataset` draws captioned images of shapes on the fly (reproducible from a seed), `measure` reads
an image back into words (colour, background, shape, position), `train` trains the VAE, CLIP text
encoder and U-Net and writes `models/checkpoints/latentgraph-demo.safetensors`, `evaluate`
generates through the real node graph and scores the images against their prompts, and `figure`
draws the prompts x samplers grid in docs/.
"""
