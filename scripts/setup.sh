#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install vlab into it.
#
# The install recipe, chosen once for the whole project: torch 2.14.1 + torchvision 0.29.1.
# It is a CUDA build that also runs on CPU, so the same environment serves a laptop, CI and
# a GPU node; torchvision is needed by timm (EVA-02, the paper's vision encoder). Override
# with VLAB_TORCH_SPEC, e.g. VLAB_TORCH_SPEC="torch==2.13.0" for a CPU-only wheel without
# torchvision (everything but the timm encoders works), or a build for your CUDA version.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLAB_VENV:-.venv}
TORCH_SPEC=${VLAB_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${VLAB_EXTRAS:-dev}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC 2> >(grep -v "is ignored: it is neither" >&2)
"${PIP[@]}" -e ".[${EXTRAS}]" 2> >(grep -v "is ignored: it is neither" >&2)
echo "vlab installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
