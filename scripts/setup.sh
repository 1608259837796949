#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install vlab into it.
#
# By default every package comes at the version in requirements.lock: the set CI tested, so a
# fresh machine gets what passed (refresh it with scripts/lock.sh). The torch build is
# scripts/torch-spec.sh's (torch 2.14.1 + torchvision 0.29.1, a CUDA build that also runs on
# CPU). Settings, all optional:
#   VLAB_DEPS=latest     the newest versions pyproject.toml's ranges allow instead of the lock
#                        (torch stays the chosen build)
#   VLAB_TORCH_SPEC=...  another torch, e.g. "torch==2.13.0" (CPU-only wheel, no torchvision:
#                        everything but the timm encoders works) or a build for your CUDA; the
#                        lock's torch, torchvision, triton and nvidia-* pins are then dropped
#   VLAB_EXTRAS=dev,gpu  extras (gpu: mamba-ssm and causal-conv1d, on CUDA machines)
#   VLAB_VENV=PATH       where the environment goes (default .venv)
# The official COCO caption metrics (pycocoevalcap) run Java: without a working `java`, setup
# installs Debian's default-jre-headless when it runs as root with apt-get, and otherwise says
# what to install and carries on (caption results then name the metrics they could not compute).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/torch-spec.sh
VENV=${VLAB_VENV:-.venv}
TORCH_SPEC=${VLAB_TORCH_SPEC:-$VLAB_LOCKED_TORCH}
EXTRAS=${VLAB_EXTRAS:-dev}
DEPS=${VLAB_DEPS:-locked}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
case "$DEPS" in
  locked)
    if [ -n "${VLAB_TORCH_SPEC:-}" ]; then
      # Another torch brings its own torchvision, triton and CUDA libraries.
      grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' \
        requirements.lock >"$CONSTRAINTS"
    else
      cp requirements.lock "$CONSTRAINTS"
    fi
    ;;
  latest)
    # Everything as new as pyproject.toml allows, except torch: that stays the chosen build.
    tr ' ' '\n' <<<"$TORCH_SPEC" | grep -E '^[A-Za-z]' >"$CONSTRAINTS"
    PIP+=(--upgrade --upgrade-strategy eager)
    ;;
  *)
    echo "scripts/setup.sh: VLAB_DEPS must be 'locked' or 'latest', not '$DEPS'" >&2
    exit 2
    ;;
esac
PIP+=(-c "$CONSTRAINTS")
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC 2> >(grep -v "is ignored: it is neither" >&2)
"${PIP[@]}" -e ".[${EXTRAS}]" 2> >(grep -v "is ignored: it is neither" >&2)
# JupyterLab (a dependency) reopens a saved report with its notebook's kernel, "python3": the
# spec ipykernel installs in the environment, run by the Python that runs Lab. A python3 spec
# found first elsewhere (JUPYTER_PATH) would start another Python without vlab: say so.
"$VENV/bin/python" - <<'PY'
import sys
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("python3")
ours = {"python", "python3", "python%d.%d" % sys.version_info[:2], sys.executable}
if spec.argv[0] not in ours:
    print(f"scripts/setup.sh: warning: Jupyter's python3 kernel ({spec.resource_dir}) runs "
          f"{spec.argv[0]}, not {sys.executable}: reports reopened in JupyterLab lack vlab",
          file=sys.stderr)
PY
# Java for the COCO caption toolkit's PTB tokenizer, METEOR 1.5 and SPICE jars (Java 8+).
if ! java -version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/setup.sh: no working java; installing Debian's default-jre-headless (for the COCO caption metrics)"
    if ! { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        default-jre-headless >/dev/null; }; then
      echo "scripts/setup.sh: warning: installing default-jre-headless failed" >&2
    fi
  fi
  if ! java -version >/dev/null 2>&1; then
    echo "scripts/setup.sh: warning: no working 'java' on PATH, so caption results leave out" \
      "the official BLEU, METEOR, ROUGE-L, CIDEr and SPICE (they say so under 'unavailable')." \
      "Install a Java 8+ runtime: 'sudo apt-get install default-jre-headless' on Debian/Ubuntu," \
      "or any JRE with its 'java' on PATH, e.g. 'module load java' on a cluster." >&2
  fi
fi
VERSIONS=$("$VENV/bin/python" -c 'import torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}")')
echo "vlab installed in $VENV ($DEPS versions: $VERSIONS)"
