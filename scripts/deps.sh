#!/usr/bin/env bash
# Install every system package anvil's build, tests, demo and benches need.
# Idempotent: installs only what is missing. Works as root or through sudo.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev   # compilers; clang + runtime for libFuzzer/ASan
  libopenblas-dev libzstd-dev libarchive-dev libjansson-dev libpcre2-dev
  protobuf-c-compiler libprotobuf-c-dev                  # ONNX (generated from onnx.proto)
  libonnx-dev                                            # onnx.proto that protoc-c compiles at build time
  python3-onnx                                           # tests: onnx.checker, hostile ONNX fixtures
  libcriterion-dev                                       # unit tests
  libopenmpi-dev openmpi-bin                             # multi-node training
  python3 python3-numpy                                  # fixture generators only, never at runtime
  python3-torch                                          # tests: torch.load(weights_only=True) of written .pt
  xz-utils zstd                                          # unpacking peers' tools, dataset tooling
  sentencepiece                                          # spm_train: tokenizer training peer (make bench)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all ${#PKGS[@]} packages present"
else
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm peers for parity tests and benches (HF tokenizers, tiktoken), in a cache
# folder outside the repo; tests find it through ANVIL_NODE_DIR.
NODE_DIR=${ANVIL_NODE_DIR:-$HOME/.cache/anvil/node}
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d "$NODE_DIR/node_modules/tokenizers" ] || [ ! -d "$NODE_DIR/node_modules/tiktoken" ]; then
  echo "deps.sh: installing npm tokenizers, tiktoken into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent tokenizers@0.23.2 tiktoken@1.0.22)
fi
# onnxruntime-node for the ONNX export tests (--ignore-scripts: its install
# script only fetches CUDA binaries; the CPU runtime ships in the package)
if [ ! -d "$NODE_DIR/node_modules/onnxruntime-node" ]; then
  echo "deps.sh: installing npm onnxruntime-node into $NODE_DIR"
  (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund --silent onnxruntime-node@1.30.0)
fi
