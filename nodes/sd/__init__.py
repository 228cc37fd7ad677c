"""Stable Diffusion model code: checkpoints, text encoder, U-Net, VAE, samplers and schedules."""
