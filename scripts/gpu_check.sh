#!/usr/bin/env bash
# One prepared check of every GPU path on one CUDA GPU, at most 8 minutes (docs/scaling.md):
#   1 install     the wheels in .whl/ that a bare GPU image lacks (Hydra, OmegaConf, W&B, ...), then the project
#   2 gpu_tests   pytest -m gpu: bf16 steps, channels-last + torch.compile, GPU-resident data, DDP over NCCL
#   3 benchmark   scripts/benchmark.py mode=gpu with one repeat: framework vs bare loop (ResNet-18, DnCNN and
#                 the near-zero-compute rows), the main fast paths on/off for ResNet-18 and ViT-S/4 at batch 512
#   4 train       DnCNN-S (17 x 64) at sigma = 25 on the GPU-resident photos for a fixed time (trainer.max_time)
#   5 eval        scripts/eval.py on the README's test crops (camera, astronaut, chelsea, 256 px) beside TV / NLM
# Every step has its own time limit and log; a failing step does not stop the next. Results go to --out
# (default $OUT when set, else outputs/gpu_check/<time>): summary.txt, plan.txt, steps/<n>_<name>.log,
# benchmark/report.md, train/ (the run directory), eval/metrics.json.
#
# Usage, from the project root:
#   bash scripts/gpu/prepare_wheels.sh        # once, on a machine with network: writes .whl/ (~36 MB)
#   bash scripts/gpu_check.sh                  # on the GPU machine (carry .whl there)
#   bash scripts/gpu_check.sh --dry-run        # anywhere: check the plan, the install command, the configs
# Options: --out DIR, --no-install (the packages are there already), --train-seconds N (default 140),
#          --python PY (default $PYTHON, else python3).
set -uo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=0
INSTALL=1
TRAIN_SECONDS=140
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
BUDGET_S=480 # the limit for the whole script: the step limits below must add up to at most this

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-install) INSTALL=0 ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --train-seconds) TRAIN_SECONDS=${2:?--train-seconds needs a number}; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)"; exit 2 ;;
  esac
  shift
done
case "$TRAIN_SECONDS" in
  '' | *[!0-9]*) echo "error: --train-seconds must be a whole number of seconds, got $TRAIN_SECONDS"; exit 2 ;;
esac
mkdir -p "$OUT_DIR/steps" || { echo "error: cannot create $OUT_DIR"; exit 2; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)

# What a bare GPU image lacks: scripts/gpu/wheel_packages.txt (scripts/gpu/prepare_wheels.sh downloads them into .whl/).
WHEEL_DIR=.whl
PACKAGES=$(grep -v '^[[:space:]]*\(#\|$\)' scripts/gpu/wheel_packages.txt | sed 's/[=<>!~].*//' | tr '\n' ' ' | sed 's/ $//')
INSTALL_CMD="$PY -m pip install -q --no-index --find-links $WHEEL_DIR --no-compile $PACKAGES"
PROJECT_CMD="$PY -m pip install -q --no-deps --no-build-isolation -e ."

# W&B offline everywhere: nothing leaves the machine; the runs can be uploaded later with `wandb sync`.
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
TRAIN_MIN=$(printf '00:00:%02d:%02d' $((TRAIN_SECONDS / 60)) $((TRAIN_SECONDS % 60)))
TRAIN_DIR="$OUT_DIR/train"

# ------------------------------------------------------------------------------------------------ the plan
# name | time limit (s) | runs Hydra (1: checked with --cfg job in a dry run) | command
STEPS=(
  "install|40|0|$( [ $INSTALL = 1 ] && echo "$INSTALL_CMD; $PROJECT_CMD" || echo "echo 'install skipped (--no-install)'")"
  "gpu_tests|90|0|$PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py"
  "benchmark|150|1|$PY scripts/benchmark.py mode=gpu repeats=1 'sections=[overhead,fast_paths]' 'fast_path_variants=[baseline,bf16-mixed,channels_last,all]' hydra.run.dir=$OUT_DIR/benchmark"
  "train|$((TRAIN_SECONDS + 25))|1|$PY scripts/train.py experiment=denoise_dncnn_s_gpu data=denoise_photos_gpu data.num_workers=0 data.patches_per_epoch=32768 trainer.max_epochs=60 ++trainer.max_time=$TRAIN_MIN tags=[gpu_check] hydra.run.dir=$TRAIN_DIR"
  "eval|35|1|$PY scripts/eval.py ckpt_path=$TRAIN_DIR/checkpoints/last.ckpt +data.eval_crop=256 tags=[gpu_check] hydra.run.dir=$OUT_DIR/eval"
)

total=0
i=0
echo "GPU check plan ($(date '+%Y-%m-%d %H:%M:%S')), results in $OUT_DIR" > "$OUT_DIR/plan.txt"
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit hydra cmd <<< "$step"
  i=$((i + 1))
  total=$((total + limit))
  echo "step $i $name (limit ${limit} s): $cmd" >> "$OUT_DIR/plan.txt"
done
echo "total of the step limits: ${total} s (budget ${BUDGET_S} s)" >> "$OUT_DIR/plan.txt"
cat "$OUT_DIR/plan.txt"
if [ "$total" -gt "$BUDGET_S" ]; then
  echo "error: the step limits add up to ${total} s, more than the ${BUDGET_S} s budget (use a smaller --train-seconds)"
  exit 2
fi

# ----------------------------------------------------------------------------------------------- dry run
if [ "$DRY_RUN" = 1 ]; then
  failed=0
  check() { # name, command: run it, keep its output, report ok/FAILED
    if (eval "$2") > "$OUT_DIR/steps/dry_$1.log" 2>&1; then
      echo "ok      $1"
    else
      echo "FAILED  $1 (see $OUT_DIR/steps/dry_$1.log)"
      failed=1
    fi
  }
  if [ "$INSTALL" = 1 ]; then
    if [ -d "$WHEEL_DIR" ] && ls "$WHEEL_DIR"/*.whl > /dev/null 2>&1; then
      echo "ok      wheels: $(ls "$WHEEL_DIR"/*.whl | wc -l) files in $WHEEL_DIR/ ($(du -sh "$WHEEL_DIR" | cut -f1))"
      for pkg in $PACKAGES; do
        ls "$WHEEL_DIR"/"$(echo "$pkg" | tr - _)"-*.whl > /dev/null 2>&1 ||
          { echo "FAILED  no wheel for $pkg in $WHEEL_DIR/"; failed=1; }
      done
      # the resolver alone (nothing installed): every requirement of the packages is in .whl/ or installed
      check install_resolve "$PY -m pip install --dry-run --no-index --find-links $WHEEL_DIR $PACKAGES"
    else
      echo "note    $WHEEL_DIR/ is missing: run 'bash scripts/gpu/prepare_wheels.sh' before carrying the"
      echo "        project to a bare GPU image (or use --no-install where the packages are installed)"
    fi
  fi
  check pip "$PY -m pip --version"
  check gpu_tests_collect "$PY -m pytest -q -p no:cacheprovider --collect-only -m gpu tests/test_gpu.py"
  i=0
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit hydra cmd <<< "$step"
    i=$((i + 1))
    [ "$hydra" = 1 ] && check "cfg_job_$name" "$cmd --cfg job"
  done
  if [ "$failed" = 0 ]; then echo "dry run: the plan checks out"; else echo "dry run: some checks FAILED"; fi
  exit "$failed"
fi

# ---------------------------------------------------------------------------------------------- real run
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0) if ok else 'none', '| torch', torch.__version__); sys.exit(0 if ok else 1)" ||
  { echo "error: no CUDA GPU visible to $PY (use --dry-run to check the plan without one)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT_DIR/gpu.txt" 2>&1 || true

summary="$OUT_DIR/summary.txt"
: > "$summary"
i=0
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit hydra cmd <<< "$step"
  i=$((i + 1))
  log="$OUT_DIR/steps/${i}_${name}.log"
  echo "=== step $i $name (limit ${limit} s): $cmd"
  started=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" > "$log" 2>&1
  rc=$?
  took=$(($(date +%s) - started))
  tail -n 25 "$log"
  verdict=ok
  [ "$rc" = 0 ] || verdict="FAILED (exit $rc$( [ "$rc" = 124 ] && echo ', time limit'))"
  echo "step $i $name: $verdict after ${took} s (log: steps/${i}_${name}.log)" | tee -a "$summary"
done
[ -f "$OUT_DIR/benchmark/report.md" ] && cp "$OUT_DIR/benchmark/report.md" "$OUT_DIR/benchmark_report.md"
[ -f "$OUT_DIR/eval/metrics.json" ] && cp "$OUT_DIR/eval/metrics.json" "$OUT_DIR/eval_metrics.json"
echo "=== summary ($OUT_DIR/summary.txt)"
cat "$summary"
! grep -q FAILED "$summary"
