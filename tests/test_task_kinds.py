"""A task the library never names (tests/helpers/brightness.py: a LightningModule, its data and its task kind)
goes through the scripts: trained, evaluated, ensembled and exported to ONNX, with no edit to the library."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import run_script, single_run_dir

# the user's config folder, outside conf/: their model and their data
MODEL_YAML = "_target_: tests.helpers.brightness.BrightnessModule\nwidth: 8\nlr: 0.03\n"
DATA_YAML = "_target_: tests.helpers.brightness.BrightnessData\nbatch_size: 64\nseed: 0\n"
FAST = ["logger=none", "trainer.accelerator=cpu", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null", "print_config=false"]  # fmt: skip
# the user's package must be importable, as anything a _target_ names: here the repo root holds `tests`
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Two brightness regressors (seeds 1 and 2, 4 epochs each) trained by scripts/train.py."""
    root = tmp_path_factory.mktemp("task_kinds")
    for group, text in (("model", MODEL_YAML), ("data", DATA_YAML)):
        (root / "my_conf" / group).mkdir(parents=True)
        (root / "my_conf" / group / "brightness.yaml").write_text(text)
    records = []
    for seed in (1, 2):
        cwd = root / f"seed{seed}"
        cwd.mkdir()
        run_script("train.py", f"hydra.searchpath=[file://{root / 'my_conf'}]", "model=brightness", "data=brightness",
                   "trainer.max_epochs=4", f"seed={seed}", *FAST, cwd=cwd, env=ENV)  # fmt: skip
        records.append({**_metrics(single_run_dir(cwd)), "root": cwd})
    return records


def _constant_guess_mae() -> float:
    """Test MAE of always predicting the training mean: what a model that learned nothing scores."""
    from tests.helpers.brightness import BrightnessData

    data = BrightnessData()
    data.setup()
    mean = data.splits["train"].tensors[1].mean()
    return float((data.splits["test"].tensors[1] - mean).abs().mean())


@pytest.mark.slow
def test_a_third_task_kind_trains_and_learns(trained: list[dict]) -> None:
    constant = _constant_guess_mae()
    for record in trained:
        assert record["metrics"]["test/mae"] < 0.5 * constant, (record["metrics"], constant)
        assert Path(record["best_checkpoint"]).is_file()


def test_its_checkpoint_is_found_to_be_of_its_kind() -> None:
    """The kind comes from the registry filled when the module is imported (no table in the library)."""
    from imagelab.config.run_checkpoint import model_kind
    from imagelab.kinds import DENOISING, kind_of
    from tests.helpers.brightness import BRIGHTNESS, BrightnessModule

    run_cfg = {"model": {"_target_": f"{BrightnessModule.__module__}.BrightnessModule"}}
    assert kind_of(run_cfg) is BRIGHTNESS
    assert model_kind(run_cfg) == "brightness regressor"
    assert kind_of({"model": {"_target_": "lightning_modules.denoiser.DenoiserModule"}}) is DENOISING


@pytest.mark.slow
def test_eval_rescores_it_and_an_ensemble_averages_its_members(trained: list[dict], tmp_path: Path) -> None:
    import torch

    from imagelab.tasks.ensemble import combine, load_members

    ckpts = [r["best_checkpoint"] for r in trained]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    proc = run_script("eval.py", f"ckpt_path={ckpts[0]}", "logger=none", cwd=tmp_path / "one", env=ENV)
    assert proc.returncode == 0
    single = _metrics(single_run_dir(tmp_path / "one", "eval"))["metrics"]
    assert single["test/mae"] == pytest.approx(trained[0]["metrics"]["test/mae"], abs=1e-5)

    proc = run_script(
        "eval.py", f"ckpt_path=[{ckpts[0]},{ckpts[1]}]", "logger=none", cwd=tmp_path / "two", env=ENV
    )
    scores = _metrics(single_run_dir(tmp_path / "two", "eval"))["metrics"]
    members = [scores["member0/test/mae"], scores["member1/test/mae"]]
    assert members[0] == pytest.approx(trained[0]["metrics"]["test/mae"], abs=1e-5)
    assert members[1] == pytest.approx(trained[1]["metrics"]["test/mae"], abs=1e-5)
    assert scores["test/mae"] <= sum(members) / 2 + 1e-6  # |mean - y| <= mean |member - y|, image by image
    assert "ensemble of 2" in proc.stdout  # the generic report: one row per scored model

    loaded, kind = load_members(ckpts)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = (loaded[0].module(x) + loaded[1].module(x)) / 2
        assert torch.allclose(combine(loaded, kind)(x), expected, atol=1e-6)


@pytest.mark.slow
def test_onnx_export_matches_torch_on_any_image_size(trained: list[dict], tmp_path: Path) -> None:
    import torch

    from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
    from imagelab.deploy.exported_model import ExportedModel

    ckpt = trained[0]["best_checkpoint"]
    out = tmp_path / "brightness.onnx"
    run_script("export.py", f"ckpt_path={ckpt}", "format=onnx", f"output={out}", cwd=tmp_path, env=ENV)
    exported = ExportedModel(out)
    assert exported.kind == "brightness regressor" and exported.channels == 1
    module = build_module_from_checkpoint(*load_run_checkpoint(ckpt))
    x = torch.rand(3, 1, 20, 12)  # another batch and image size than the 8x8 digits it was exported with
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(exported.run(x)), module(x), atol=1e-5)
    report = json.loads((single_run_dir(tmp_path, "export") / "report.json").read_text())
    expected = trained[0]["metrics"]["test/mae"]
    assert [row["test_mae"] for row in report["rows"]] == [pytest.approx(expected, abs=1e-4)] * 2


def test_a_subclass_is_of_its_parents_kind_unless_it_registers_its_own() -> None:
    from imagelab.config.kind_registry import registered_kind
    from imagelab.kinds import DENOISING, TaskKind
    from lightning_modules.denoiser import DenoiserModule

    class MyDenoiser(DenoiserModule):
        """A user's denoiser variant."""

    class MyOtherDenoiser(DenoiserModule):
        """A user's variant with its own kind."""

    own = TaskKind("special denoiser").register(MyOtherDenoiser)
    assert registered_kind(MyDenoiser) is DENOISING
    assert registered_kind(MyOtherDenoiser) is own


def test_attack_presets_are_target_nodes_and_plain_names_still_work() -> None:
    from lightning_modules.adversarial import FGSM, PGD, Attack
    from tests.helpers.compose import compose

    for name, cls in (("fgsm", FGSM), ("pgd", PGD)):
        attack = Attack.from_config(compose("eval", [f"attack={name}", "attack.eps=0.1"]).attack)
        assert type(attack) is cls and attack.eps == pytest.approx(0.1)
    assert FGSM(eps=0.1).schedule() == (1, 0.1)
    assert Attack.from_config({"name": "pgd", "steps": 3, "alpha": 0.01}).schedule() == (3, 0.01)


def test_export_formats_and_quantisers_are_registries() -> None:
    from imagelab.core.errors import UserError
    from imagelab.deploy.formats import FORMATS, export_format
    from imagelab.deploy.quantize import QUANTIZERS
    from imagelab.tasks.compress import METHODS

    assert {name: f.suffix for name, f in FORMATS.items()} == {
        "onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"
    }  # fmt: skip
    with pytest.raises(
        UserError,
        match=re.escape("format='tflite' is not supported: use format=onnx|torchscript|safetensors"),
    ):
        export_format("tflite")
    assert [m for m, q in QUANTIZERS.items() if q.calibrated] == ["int8_static"]
    assert METHODS == ("int8_dynamic", "int8_static", "prune")
