"""From checkpoint to deployment: the parts that export (ONNX, TorchScript, safetensors), quantise (int8),
prune and measure a trained network, and run an exported file without Lightning.

This package ``__init__`` is import-free so that entry points stay fast; import the submodules where needed:
``source`` (a checkpoint as a plain network plus its metadata), ``export`` (write the files), ``formats``
(the ``format=`` registry: writer and loader of each format),
``exported_model`` (run an exported file without Lightning), ``measure`` (latency, parity, parameters,
test metric), ``report`` (the trade-off table), ``quantize`` (the onnxruntime int8 methods, one registry), ``prune`` (torch-pruning).
The tasks that use them (scripts/export.py, compress.py, serve.py) are in ``imagelab.tasks``: ``imagelab.tasks.export``,
``imagelab.tasks.compress``, ``imagelab.tasks.serve``, with ``imagelab.tasks.deployment_data`` (the test split and calibration images).
"""
