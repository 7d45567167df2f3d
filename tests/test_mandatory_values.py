"""Every mandatory value (``???``) a script's config leaves unset is one ``error:`` line naming the key, exit 2.

The cases come from the shipped configs themselves: every entry config of a Hydra script, and the train config
with every ``data`` option, composed without overrides; each one that leaves a ``???`` is run for real with
torch, Lightning and W&B made unimportable, so the check must happen before any heavy import.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagelab.config.config_check import missing_keys
from tests.helpers.paths import CONF_DIR, REPO_ROOT, SCRIPTS

HEAVY = ("torch", "lightning", "wandb")


def _entry_configs() -> dict[str, str]:
    """script file -> the config it composes (``@hydra.main(config_name=...)``)."""
    found = {}
    for script in sorted(SCRIPTS.glob("*.py")):
        match = re.search(r'config_name="(\w+)"', script.read_text())
        if match:
            found[script.name] = match.group(1)
    return found


def _cases() -> list[tuple[str, list[str], list[str]]]:
    """(script, overrides, the keys left at ???) for every shipped composition that misses a value."""
    from hydra import compose, initialize_config_dir

    cases = []
    combos = [(script, name, []) for script, name in _entry_configs().items()]
    combos += [("train.py", "train", [f"data={p.stem}"]) for p in sorted((CONF_DIR / "data").glob("*.yaml"))]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for script, name, overrides in combos:
            missing = sorted(missing_keys(compose(config_name=name, overrides=overrides)))
            if missing:
                cases.append((script, overrides, missing))
    return cases


CASES = _cases()


def test_the_cases_cover_the_known_mandatory_values() -> None:
    covered = {(script, key) for script, _, keys in CASES for key in keys}
    assert {("eval.py", "ckpt_path"), ("export.py", "ckpt_path"), ("denoise.py", "input")} <= covered
    assert {("predict.py", "input"), ("train.py", "data.source.root"), ("train.py", "data.root")} <= covered


@pytest.fixture(scope="module")
def no_heavy_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which importing torch, lightning or wandb fails at once."""
    fake = tmp_path_factory.mktemp("fake_heavy")
    for name in HEAVY:
        (fake / name).mkdir()
        (fake / name / "__init__.py").write_text(
            f"raise ImportError('{name} imported before the config check')\n"
        )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO_ROOT)])}


@pytest.mark.parametrize(("script", "overrides", "missing"), CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_a_missing_mandatory_value_is_one_error_line(
    script: str, overrides: list[str], missing: list[str], no_heavy_imports: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *overrides],
        cwd=tmp_path,
        env=no_heavy_imports,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for key in missing:
        assert f"{key}=" in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
