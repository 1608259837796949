#!/usr/bin/env bash
# Run vlab's tests against another transformers release, laid over .venv without changing it.
#
# The release is installed once (no dependencies: the rest of .venv stays as locked) into
# $VLAB_CACHE/transformers-VERSION (default ~/.cache/vlab/...) and put first on PYTHONPATH.
# By default it runs the tests that touch transformers' model APIs (building the backbones,
# the scan hook, cached decoding for both arms); pass pytest arguments to run others, e.g.
# `tests` for the whole suite. Use it before widening the transformers range in pyproject.toml.
# Usage: scripts/check-transformers.sh VERSION [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:?usage: scripts/check-transformers.sh VERSION [PYTEST_ARGS...]}
shift
DIR=${VLAB_CACHE:-$HOME/.cache/vlab}/transformers-$VERSION
if [ ! -d "$DIR/transformers" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$DIR" "transformers==$VERSION" 2> >(grep -v "is ignored: it is neither" >&2)
fi
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(tests/test_backbones.py tests/test_selective_scan.py
  tests/test_vlm_generate.py)
export PYTHONPATH="$DIR" HF_HUB_OFFLINE=1
echo "testing with transformers $(.venv/bin/python -c 'import transformers as t; print(t.__version__)')"
.venv/bin/python -m pytest -q -p no:cacheprovider "${ARGS[@]}"
