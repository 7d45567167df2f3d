"""LightningModules of the framework: the denoiser (networks in ``networks/``) and the timm classifier.

This package ``__init__`` is deliberately import-free so that ``import lightning_modules`` stays cheap; import
the submodules (``lightning_modules.denoiser``, ``lightning_modules.optim``, ...) where they are needed.
"""
