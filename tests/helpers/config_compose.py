"""Compose a script's config in-process exactly as Hydra would for a command line, sweeps expanded.

Used by the tests that keep the docs and the shipped configs honest (``tests/test_docs_commands.py``,
``tests/test_shipped_configs.py``): one Hydra initialisation, then one ``compose`` per job a command line
would start. A sweep (``a=1,2``, ``choice(...)``, ``interval(...)``) is expanded to one job per value of one
swept key at a time (the other keys at their first value; an interval at both ends), so a wrong value
anywhere in a sweep fails. Each composed job must leave no ``???`` unset and must resolve every interpolation
outside the ``hydra`` node.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override
from omegaconf import DictConfig, OmegaConf, open_dict

from imagelab.config.config_check import missing_keys
from imagelab.resolvers import register_resolvers

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ComposeError(AssertionError):
    """A command line or config that does not compose, with the overrides that were tried."""


def _sweep_values(override: Override, optuna: bool) -> list[str]:
    """The override texts of the jobs a sweep override stands for (see the module docstring)."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start}", f"{key}={value.end}"]  # int(interval(...)) gives ints
    if optuna and isinstance(value, ChoiceSweep):  # the Optuna sweeper formats each choice as it is
        return [f"{key}={choice}" for choice in value.list]
    return [f"{key}={text}" for text in override.sweep_string_iterator()]


def expand_sweeps(overrides: list[str], optuna: bool = False) -> list[list[str]]:
    """One override list per job to compose: all first values, then each other value of each swept key."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [text for text, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]
    sweeps = [_sweep_values(o, optuna) for o in parsed if o.is_sweep_override()]
    first = [values[0] for values in sweeps]
    jobs = [[*fixed, *first]]
    for i, values in enumerate(sweeps):
        for other in values[1:]:
            jobs.append([*fixed, *first[:i], other, *first[i + 1 :]])
    return jobs


class Composer:
    """Hydra's compose API on ``conf/`` (or ``config_dir``), writing nothing outside ``work``."""

    def __init__(self, work: Path, config_dir: Path = CONF_DIR) -> None:
        self.work = work
        self.config_dir = config_dir
        self.composed = 0  # jobs composed so far (for the tests' reports)
        self._done: dict[tuple[str, ...], DictConfig] = {}  # the same job is composed once

    @contextmanager
    def session(self) -> Iterator[Composer]:
        """Initialise Hydra once for many compositions."""
        register_resolvers()
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(self.config_dir)):
            yield self

    def job(self, config_name: str, overrides: list[str]) -> DictConfig:
        """Compose one job (no sweep left in ``overrides``) and check it; the config with its hydra node."""
        key = (config_name, *overrides)
        if key in self._done:
            HydraConfig.instance().set_config(self._done[key])
            return self._done[key]
        where = [f"hydra.run.dir={self.work / 'run'}", f"hydra.sweep.dir={self.work / 'sweep'}"]
        try:
            cfg = compose(config_name=config_name, overrides=[*overrides, *where], return_hydra_config=True)
        except Exception as exc:
            raise ComposeError(f"{config_name} {' '.join(overrides)}: {type(exc).__name__}: {exc}") from None
        self.composed += 1
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(self.work / "run")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        unset = [key for key in missing_keys(cfg) if not key.startswith("hydra.")]
        if unset:
            raise ComposeError(f"{config_name} {' '.join(overrides)}: {', '.join(unset)} left at ???")
        for key in cfg:
            if key == "hydra":
                continue
            try:
                node = cfg._get_node(key)
                OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else cfg[key]
            except Exception as exc:
                raise ComposeError(f"{config_name} {' '.join(overrides)}: {key}: {exc}") from None
        self._done[(config_name, *overrides)] = cfg
        return cfg

    def command(self, config_name: str, overrides: list[str]) -> list[DictConfig]:
        """Every job of a command line's overrides (a ``-m`` sweep expanded); the composed configs."""
        jobs = expand_sweeps(overrides)
        first = self.job(config_name, jobs[0])
        optuna = "optuna" in str(OmegaConf.select(first, "hydra.sweeper._target_", default=""))
        if optuna:
            jobs = expand_sweeps(overrides, optuna=True)
        return [first, *(self.job(config_name, job) for job in jobs[1:])]

    def search_space_jobs(self, config_name: str, overrides: list[str], cfg: DictConfig) -> list[DictConfig]:
        """The jobs of ``cfg``'s own ``hydra.sweeper.params`` (an Optuna search space) on top of ``overrides``."""
        params: dict[str, Any] = OmegaConf.to_container(cfg.hydra.sweeper.params or {}, resolve=False)
        space = [f"{key}={value}" for key, value in params.items()]
        return [self.job(config_name, job) for job in expand_sweeps([*overrides, *space], optuna=True)]
