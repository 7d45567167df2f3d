"""LightningDataModules and data readers (image files, CIFAR-10, noise models for synthetic denoising pairs).

This package file stays import-free so that entry points start fast: import the modules themselves
(``datamodules.denoising.DenoisingDataModule``), which load torch and lightning.
"""
