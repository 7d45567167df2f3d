"""Denoising networks (conv autoencoder, DnCNN, UNet); build them by name with ``networks.registry``.

Import-free on purpose: import ``lightning_modules.networks.registry`` (or a network module) when needed.
"""
