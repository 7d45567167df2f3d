"""The one device resolver (imagelab.core.devices): auto, explicit devices and one-line errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from imagelab.core.devices import resolve_device, resolve_precision
from imagelab.core.errors import UserError


def test_auto_is_the_trainers_device_else_cuda_when_visible_else_cpu() -> None:
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    assert resolve_device("auto", trainer=trainer) == torch.device("meta")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu", trainer=trainer) == torch.device("cpu")  # an explicit choice wins


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "cpu0"])
def test_an_invalid_name_is_a_user_error_naming_the_key(name: str) -> None:
    with pytest.raises(UserError, match=r"^data\.device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name, "data.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match=rf"^device={name} but no CUDA GPU is visible"):
        resolve_device(name)


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_a_cpu_is_bf16_only_with_amx(
    amx: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true"  # an explicit choice wins
    assert resolve_precision("16-mixed", "auto") == "16-mixed"


def test_auto_precision_on_a_gpu_is_bf16_where_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
