"""From checkpoint to deployment: export (ONNX, TorchScript, safetensors) with a parity check, int8
quantisation and structured pruning with a measured trade-off report, and an HTTP server.

This package ``__init__`` is import-free so that entry points stay fast; import the submodules where needed:
``deployment.source`` (a checkpoint as a plain network plus its metadata), ``deployment.export``,
``deployment.exported_model`` (run an exported file without Lightning), ``deployment.parity``,
``deployment.measure``, ``deployment.quantize``, ``deployment.prune``, ``deployment.report``,
``deployment.compress`` and ``deployment.server``.
"""
