"""Decide whether W&B logs online or offline without importing wandb or prompting for a login."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from imagelab.core.errors import UserError

VALID_MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True when an API key is set in the environment or stored by ``wandb login`` in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(netrc_path)).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """Turn the configured mode into one wandb accepts.

    ``auto`` (the default) means: the ``WANDB_MODE`` environment variable if set, else ``online`` when
    credentials exist, else ``offline`` — so a machine that is not logged in never sees a login prompt.
    """
    mode = (mode or "auto").lower()
    if mode not in VALID_MODES:
        raise UserError(f"logger.wandb.mode={mode!r} is not one of {', '.join(VALID_MODES)}")
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if has_wandb_credentials() else "offline"
