#!/usr/bin/env bash
# Refresh requirements.lock: the exact versions scripts/setup.sh installs by default.
#
# Resolves pyproject.toml's ranges (with the dev extra) plus the torch pins of setup.sh for
# CPython 3.11 on x86_64 Linux with uv (pip-compile's format; uv runs from a throwaway venv,
# it is not a dependency of vlab). After refreshing, run the tests on the new set
# (`bash scripts/setup.sh && .venv/bin/python -m pytest`) before committing the lock.
# Usage: scripts/lock.sh                            newest allowed versions of everything
#        scripts/lock.sh --upgrade-package NAME    move NAME only, keep the other pins
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/torch-spec.sh
source scripts/torch-spec.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check uv \
  2> >(grep -v "is ignored: it is neither" >&2)
tr ' ' '\n' <<<"$VLAB_LOCKED_TORCH" >"$TMP/torch.in"
cp requirements.lock "$TMP/lock.txt" 2>/dev/null || true  # uv keeps an output file's pins
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--upgrade)
"$TMP/venv/bin/uv" pip compile pyproject.toml "$TMP/torch.in" --extra dev \
  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  --no-header --quiet "${ARGS[@]}" -o "$TMP/lock.txt"
{
  echo "# The tested set of versions that scripts/setup.sh installs (VLAB_DEPS=locked, the default)."
  echo "# Made by scripts/lock.sh (uv pip compile of pyproject.toml [dev] + $VLAB_LOCKED_TORCH,"
  echo "# CPython 3.11, x86_64 Linux) on $(date -u +%Y-%m-%d). Do not edit by hand: rerun it."
  sed "s#-r $TMP/torch.in#scripts/torch-spec.sh#" "$TMP/lock.txt"
} >requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) pins)"
