"""The Lightning callbacks every run shares, one purpose per module.

``run_config`` (the run's config in each checkpoint), ``parameter_count``, ``deferred_loggers`` (loggers only
once the data is set up), ``graceful_interrupt`` and ``nonfinite_guard`` (signals and divergence, checked at
the ``check_points``), ``step_hooks`` (empty per-step hooks hidden from Lightning), ``speed`` (GPU fast
paths), ``lr_scaling``, ``lr_monitor``, ``model_summary``, ``progress``, ``profiling``, ``model_checkpoint``
(Lightning's, writing a state that best and last share once); ``final_network`` is
the hook callbacks call before they touch a module's network. ``imagelab.tasks.callback_assembly`` puts a
training run's list together.
"""
