#!/usr/bin/env bash
# Install every system package anvil's build, tests, demo and benches need.
# Idempotent: installs only what is missing. Works as root or through sudo.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev   # compilers; clang + runtime for libFuzzer/ASan
  libopenblas-dev libzstd-dev libarchive-dev libjansson-dev libpcre2-dev
  protobuf-c-compiler libprotobuf-c-dev                  # ONNX (generated from onnx.proto)
  libcriterion-dev                                       # unit tests
  libopenmpi-dev openmpi-bin                             # multi-node training
  python3 python3-numpy                                  # fixture generators only, never at runtime
  xz-utils zstd                                          # unpacking peers' tools, dataset tooling
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
