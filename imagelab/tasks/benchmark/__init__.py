"""The benchmark of ``scripts/benchmark.py``: what the framework costs and where the time goes.

Modules: ``plan`` (``conf/benchmark/<mode>.yaml`` read into dataclasses), ``timing`` (timer callbacks,
memory), ``bare`` (the bare PyTorch loop), ``step_overhead`` (ms/step of near-zero-compute models),
``framework_vs_bare`` (the overhead section), ``sections`` (data, start-up, fast paths), ``report`` (goals,
JSON and Markdown), ``runner`` (``run_benchmark``: the whole run).

Sections (``sections`` in conf/benchmark.yaml), all measured in one process except the start-up timings:

* ``overhead``: training steps/s of each model through the framework (``imagelab.tasks.training.train``
  with the run's own Trainer, callbacks and logger configuration) and through a bare PyTorch loop (forward,
  loss, backward, optimizer step) on the same network, data loader, batch size, device and precision;
  framework and bare runs alternate (F B F B ...), each timed over ``steps`` steps after ``warmup`` steps;
  the ratio is the median over the adjacent (framework, bare) pairs of bare / framework steps/s, which a
  shared machine's other jobs disturb least; the ratios of the best and of the median steps/s are reported too.
* ``data``: images/s of each data module's training loader alone (batches moved to the device as Lightning
  does), against the images/s the matching model consumes (framework steps/s x batch size).
* ``startup``: wall time of ``scripts/train.py --cfg job`` and of a cold ``scripts/train.py`` start (a new
  Python process) to its first training step; also the in-process time from ``train()`` to its first step.
* ``fast_paths``: framework steps/s with each GPU fast path alone and all together (GPU plan: ResNet-18 and
  ViT-S/4 at batch 512 on CIFAR-shaped data), and GPU-resident data against the DataLoader path.
* memory: peak host RSS of this process and of the cold training run, peak device memory per run on GPU.

Plans (``mode``; one file each, ``conf/benchmark/<mode>.yaml``): ``smoke`` (toy sizes on CPU: checks the
harness), ``cpu`` (the default denoiser and a timm ResNet-18 on 2 CPU cores, a few minutes), ``gpu`` (adds the
fast-path table). Goals are
reported as pass/fail, never asserted. The report goes to ``report.json`` and ``report.md`` in the run dir.
"""
