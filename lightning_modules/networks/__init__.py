"""Denoising networks (conv autoencoder, DnCNN, UNet), built from ``model.net`` nodes (conf/model/net/).

Import-free on purpose: import a network module when needed.
"""
