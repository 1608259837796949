#!/usr/bin/env bash
# The CPU default job: both architectures x both variants of the retrieval probe at L=8.
# Usage: scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart). Rerunning resumes or skips.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
for arch in pythia mamba; do
  for variant in suffix prefix; do
    .venv/bin/vlab probe run --arch "$arch" --variant "$variant" --length 8 --steps 2000 \
      --out "$OUT/$arch-$variant-L8"
  done
done
echo "run directories in $OUT"
