#!/usr/bin/env bash
# README command 1: install everything, then run the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/llmpack info
.venv/bin/llmpack demo "$@"
