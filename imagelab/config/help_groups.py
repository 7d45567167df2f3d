"""The config-group list of a script's ``--help`` without the groups that do nothing for that script.

``conf/`` is shared by every script, so Hydra's own ``$APP_CONFIG_GROUPS`` lists, for ``train.py``, the
groups that only ``eval.py`` (``attack``) or ``benchmark.py`` (``benchmark``) read. ``train.yaml`` builds its
help text with ``${help_groups:attack,benchmark}`` instead (resolver registered by :mod:`imagelab.resolvers`).
"""

from __future__ import annotations

from hydra.core.global_hydra import GlobalHydra


def help_groups(*excluded: str) -> str:
    """Hydra's group listing (``group: option, ...`` lines) without hydra/ and without ``excluded`` groups."""
    hydra = GlobalHydra.instance().hydra
    if hydra is None:
        return ""
    skip = {name.strip() for name in excluded if name and name.strip()}

    def shown(group: str) -> bool:
        top = group.split("/", 1)[0]
        return top != "hydra" and top not in skip

    return hydra.format_config_groups(shown).rstrip("\n")
