"""The top layer: what the scripts run (train, evaluate, denoise, predict, benchmark, export, compress, serve)
and the launch helpers around them (task runner, resume, DDP launch). See ``imagelab/__init__.py`` for the layers.
"""
