"""Summarise a sweep: ``python scripts/summarize.py <multirun folder> [--metric M --mode min|max] [--out D]``.

Reads every job folder (resolved config and overrides in ``.hydra/``, ``metrics.json``) and writes
``summary.md`` (ranked table, best job, failed/unfinished jobs, plots), ``summary.csv`` and ``plots/*.png``
into the folder; prints the best job and the command line that reproduces it. Works on any multirun
(grid, Optuna, joblib, SLURM) and on the W&B-sweep folder ``outputs/train/wandb_sweeps/<sweep id>``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the summary files and print the report; 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="multirun folder, e.g. outputs/train/multiruns/2024-05-01_12-00-00")
    parser.add_argument(
        "--metric", help="rank by this final metric (e.g. test/psnr) instead of the objective"
    )
    parser.add_argument(
        "--mode", choices=("max", "min"), help="direction of --metric (default: the objective's)"
    )
    parser.add_argument(
        "--out", help="folder for summary.md, summary.csv and plots/ (default: the sweep folder)"
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=5,
        help="per-class accuracy columns in summary.md: the N worst classes of the best job (all in the CSV)",
    )
    args = parser.parse_args(argv)

    # imported after parsing: the report modules load matplotlib, which --help must not pay for
    from imagelab.core.errors import UserError
    from imagelab.sweeps.summary.report import report_lines, write_summary

    try:
        summary = write_summary(
            args.sweep_dir, out_dir=args.out, metric=args.metric, mode=args.mode, per_class_top=args.per_class
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
