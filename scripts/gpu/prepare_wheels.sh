#!/usr/bin/env bash
# Downloads, on a machine with network, the wheels that a GPU machine without Hydra/W&B lacks
# (scripts/gpu/wheel_packages.txt, with their dependencies), so that scripts/gpu_check.sh can install them
# there without a network. Usage, from the project root:
#   bash scripts/gpu/prepare_wheels.sh                        # writes .whl/ (about 36 MB) for CPython 3.12
#   bash scripts/gpu/prepare_wheels.sh --python-version 3.11 --dest /tmp/whl
#   bash scripts/gpu/prepare_wheels.sh --dry-run              # print the pip commands only
# Then carry .whl/ to the GPU machine and run `bash scripts/gpu_check.sh` there (its step 1 installs them).
# Options: --dest DIR (default .whl), --python-version X.Y (the GPU machine's Python, default 3.12),
#          --keep-numpy (numpy and scipy are left out by default: the GPU image has them, and they are large).
set -euo pipefail

cd "$(dirname "$0")/../.."
DEST=.whl
PY_VERSION=3.12
KEEP_NUMPY=0
DRY_RUN=0
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) DEST=${2:?--dest needs a folder}; shift ;;
    --python-version) PY_VERSION=${2:?--python-version needs X.Y}; shift ;;
    --keep-numpy) KEEP_NUMPY=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)"; exit 2 ;;
  esac
  shift
done
case "$PY_VERSION" in
  3.[0-9] | 3.[0-9][0-9]) ;;
  *) echo "error: --python-version must look like 3.12, got $PY_VERSION"; exit 2 ;;
esac

mapfile -t PACKAGES < <(grep -v '^[[:space:]]*\(#\|$\)' scripts/gpu/wheel_packages.txt)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
# hydra-core pins antlr4-python3-runtime 4.9.*, published only as a source archive: build its (pure) wheel here.
ANTLR=(wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3)
DOWNLOAD=(download -q --only-binary=:all: --python-version "$PY_VERSION" --implementation cp "${PLATFORMS[@]}"
  --find-links "$DEST" -d "$DEST" "${PACKAGES[@]}")

if [ "$DRY_RUN" = 1 ]; then
  echo "$PY -m pip ${ANTLR[*]}"
  echo "$PY -m pip ${DOWNLOAD[*]}"
  exit 0
fi
mkdir -p "$DEST"  # .whl/ is in .gitignore
"$PY" -m pip "${ANTLR[@]}"
"$PY" -m pip "${DOWNLOAD[@]}"
if [ "$KEEP_NUMPY" = 0 ]; then
  rm -f "$DEST"/numpy-* "$DEST"/scipy-*
fi
echo "wheels: $(ls "$DEST"/*.whl | wc -l) files in $DEST/ ($(du -sh "$DEST" | cut -f1)); carry it to the GPU machine"
