"""Everything the tests share, one module per purpose (test modules import from here, never from each other
or from ``tests.conftest``, which holds only fixtures and the offline set-up).

- ``paths``: ``REPO_ROOT``, ``CONF_DIR``, ``SCRIPTS``.
- ``compose``: ``compose`` a config as the scripts do, ``set_output_dir``, ``activate``, ``as_multirun``.
- ``runs``: ``run_script`` (a real script in a subprocess), ``single_run_dir``, ``read_metrics``
  (``metrics.json``), ``sweep_jobs``, ``psnr_gain``, ``assert_one_line_error``.
- ``overrides``: override lists for small runs of each task (``FAST_DENOISE``, ``fast_denoise(logger)``,
  ``sweep_denoise(logger)``, ``ONE_EPOCH_DENOISE``, ``FOUR_STEP_DENOISE``, ``DIGITS``, ``QUIET``).
- ``in_process``: ``train_in_process``, ``train_composed`` (a composed config, e.g. the ``cfg_denoise``
  fixture) and ``task_in_process`` (train/eval through the task runner), without an interpreter start;
  ``working_dir``.
- ``local_cluster``: ``start_local_slurm`` (the ``cluster``-marked tests' two-node SLURM cluster, skipped when
  not root) and ``slurm_job_env`` (the environment for jobs that import this checkout).
- Parts loaded into real runs by ``_target_``: ``user_net`` (a user's network), ``data_plugins`` (a user's
  noise model and image source), ``fault_injection`` (callbacks that break a run at a known step).

Fixtures (``tests/conftest.py``): ``workdir``, ``restore_torch_flags``, ``cfg_denoise``/``cfg_classifier``
(a composed tiny-run config, copied per test from the session's ``*_global`` one), ``tiny_denoise_run`` and
``tiny_classifier_run`` (one tiny run of each task, trained once per session).

Mark a test ``@pytest.mark.slow`` when it starts a script or trains for more than a few seconds:
``python -m pytest -m "not slow"`` (the edit-test loop) skips it, ``python -m pytest`` (CI) runs it. Tests
that use ``tiny_denoise_run`` or ``tiny_classifier_run`` (directly or through a fixture) are marked for you.
"""
