"""Benchmark the framework on this machine: ``python scripts/benchmark.py [mode=smoke|cpu|gpu]``.

Framework vs bare PyTorch training steps/s, data-module throughput, start-up time, memory and (on a GPU) the
fast paths; report as JSON and Markdown in the run directory. The plans are conf/benchmark/<mode>.yaml; see
``imagelab.tasks.benchmark`` and docs/scaling.md. Heavy libraries are imported only once the benchmark runs (``--cfg job`` stays fast).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    """Run the benchmark plan of ``cfg.mode`` and print where the report is."""
    from imagelab.core.errors import UserError

    try:
        # imported here, not at the top: they load torch and lightning, which --help / --cfg job must not pay for
        from imagelab.tasks.benchmark.runner import run_benchmark
        from imagelab.tracking.console import quiet_third_party

        quiet_third_party()  # the framework runs inside: one log line per event, no third-party tips

        report = run_benchmark(
            mode=cfg.mode,
            out_dir=cfg.paths.output_dir,
            repeats=cfg.repeats,
            sections=OmegaConf.to_container(cfg.sections) if cfg.sections is not None else None,
            keep_runs=bool(cfg.keep_runs),
            threads=cfg.get("threads"),
            fast_path_variants=(
                OmegaConf.to_container(cfg.fast_path_variants) if cfg.get("fast_path_variants") else None
            ),
            models=OmegaConf.to_container(cfg.models) if cfg.get("models") else None,
            timm_train_script=cfg.get("timm_train_script"),
            timm_epochs=cfg.get("timm_epochs", 8),
        )
    except UserError as exc:
        print(f"error: {exc}")
        raise SystemExit(2) from None
    print()
    for goal in report["goals"]:
        verdict = ("PASS" if goal["pass"] else "FAIL") if goal["applies"] else "n/a in this mode"
        print(f"{verdict:>17}  {goal['goal']}: {goal['value']}")
    print(f"report: {cfg.paths.output_dir}/report.md (and report.json), {report['duration_s']} s")


if __name__ == "__main__":
    main()
