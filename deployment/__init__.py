"""From checkpoint to deployment: export (ONNX, TorchScript, safetensors) with a parity check, int8
quantisation and structured pruning with a measured trade-off report, and an HTTP server.

This package ``__init__`` is import-free so that entry points stay fast; import the submodules where needed:
``source`` (a checkpoint as a plain network plus its metadata), ``data`` (its test split and calibration
images), ``export`` (write the files), ``exported_model`` (run an exported file without Lightning),
``measure`` (latency, parity, parameters, test metric), ``report`` (the trade-off table), ``quantize``
(onnxruntime int8), ``prune`` (torch-pruning), ``tasks_common``/``export_task``/``compress`` (the tasks of
scripts/export.py and scripts/compress.py) and ``server`` (scripts/serve.py).
"""
