"""OmegaConf resolvers the configs use; registered when ``imagelab`` is imported (light imports).

- ``${unique_dir:PARENT}``: a new, never shared run folder below PARENT (:mod:`imagelab.core.run_dirs`).
- ``${optuna_seed:SEED,STORAGE_PATH,STUDY_NAME}``: the sampler seed of a new or continued Optuna study
  (:func:`imagelab.sweeps.optuna_search.continued_sampler_seed`).
- ``${help_groups:GROUP,...}``: the ``--help`` list of config groups without those GROUPs
  (:func:`imagelab.config.help_groups.help_groups`).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from imagelab.config.help_groups import help_groups
from imagelab.core.run_dirs import claim_unique_dir
from imagelab.sweeps.optuna_search import continued_sampler_seed


def register_resolvers() -> None:
    """Register the project's resolvers once (cached per config: a run resolves one folder, one seed)."""
    for name, function in (("unique_dir", claim_unique_dir), ("optuna_seed", continued_sampler_seed)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=True)
    if not OmegaConf.has_resolver("help_groups"):
        OmegaConf.register_new_resolver("help_groups", help_groups)
