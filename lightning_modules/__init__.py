"""LightningModules of the framework (denoising now, classification later); networks live in ``networks/``.

This package ``__init__`` is deliberately import-free so that ``import lightning_modules`` stays cheap; import
the submodules (``lightning_modules.denoiser``, ``lightning_modules.optim``, ...) where they are needed.
"""
