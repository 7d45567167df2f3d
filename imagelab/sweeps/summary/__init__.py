"""Turn a multirun folder into a report: summary.md, summary.csv and PNG plots (``scripts/summarize.py``).

Modules: ``collect`` (read the job folders into ``Job``/``SweepSummary``), ``labels`` (cell text, axis labels),
``plots`` (objective vs parameters, accuracy vs trainable parameters), ``pareto`` (the Pareto front of
multi-objective sweeps), ``report`` (summary.md, summary.csv, the printed lines; ``write_summary``).
"""
