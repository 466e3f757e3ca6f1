#!/usr/bin/env bash
# make demo: the main job on bundled data: convert the bundled stories260K
# llama2.c checkpoint to GGUF (f32 and f16), describe it, and generate text.
set -euo pipefail
BIN=${1:-bin}
cd "$(dirname "$0")/.."
OUT=demo-out
mkdir -p "$OUT"
echo "== anvil convert models/stories260K.bin -> $OUT/stories260K.gguf"
"$BIN/anvil" convert models/stories260K.bin "$OUT/stories260K.gguf" --tokenizer models/tok512.bin
echo
echo "== anvil info $OUT/stories260K.gguf"
"$BIN/anvil" info "$OUT/stories260K.gguf"
echo
echo "== anvil convert $OUT/stories260K.gguf -> $OUT/stories260K-f16.gguf --outtype f16"
"$BIN/anvil" convert "$OUT/stories260K.gguf" "$OUT/stories260K-f16.gguf" --outtype f16
echo "== anvil convert $OUT/stories260K-f16.gguf -> $OUT/stories260K-f16.safetensors"
"$BIN/anvil" convert "$OUT/stories260K-f16.gguf" "$OUT/stories260K-f16.safetensors"
ls -l "$OUT"
echo
echo "== anvil run $OUT/stories260K.gguf -p 'Once upon a time' -n 60 --temp 0   (greedy)"
"$BIN/anvil" run "$OUT/stories260K.gguf" -p "Once upon a time" -n 60 --temp 0
echo
echo "== anvil run $OUT/stories260K-f16.gguf -p 'The little dog' -n 60 --seed 42   (sampled)"
"$BIN/anvil" run "$OUT/stories260K-f16.gguf" -p "The little dog" -n 60 --seed 42
