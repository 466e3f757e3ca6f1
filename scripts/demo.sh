#!/usr/bin/env bash
# make demo: the whole pipeline on bundled data, on CPUs, in a few minutes:
#   1. train a byte-level BPE tokenizer on tinyshakespeare
#   2. tokenize it into train/val token shards
#   3. pretrain a 3.4M-parameter Llama on it (datasets/tinyshakespeare-demo.json)
#   4. export GGUF (tokenizer embedded) + HF folder, plot the loss curve
#   5. quantize to Q8_0 and Q4_K_M
#   6. compare the quantized models with the f32 one on the validation text
#   7. generate a sample with each
# then convert the bundled stories260K (llama2.c) checkpoint and run it.
set -euo pipefail
BIN=$(cd "${1:-bin}" && pwd)
cd "$(dirname "$0")/.."
OUT=demo-out
T0=$(date +%s%N)
step() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '\n== [%d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }
rm -rf "$OUT"
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=1 # the trainer runs single-threaded sgemm inside its OpenMP threads
unset OPENBLAS_CORETYPE      # a forced core type (set on some machines) slows sgemm 1.5x

TXT=datasets/tinyshakespeare.txt
n=$(wc -l < "$TXT"); ntrain=$((n * 9 / 10))
head -n "$ntrain" "$TXT" > "$OUT/train.txt"
tail -n +"$((ntrain + 1))" "$TXT" > "$OUT/val.txt"

step "1. anvil tokenizer train: byte-level BPE, 1024 tokens -> $OUT/tokenizer.json"
"$BIN/anvil" tokenizer train "$OUT/train.txt" --vocab-size 1024 --special '<|endoftext|>' -o "$OUT/tokenizer.json"

step "2. anvil train prepare: text -> token shards in $OUT/data/"
"$BIN/anvil" train prepare --tokenizer "$OUT/tokenizer.json" "$OUT/train.txt" --val "$OUT/val.txt" -o "$OUT/data"

step "3. anvil train --config datasets/tinyshakespeare-demo.json -> $OUT/run/"
"$BIN/anvil" train --config datasets/tinyshakespeare-demo.json --data "$OUT/data" -o "$OUT/run"
"$BIN/anvil" train plot "$OUT/run/metrics.jsonl" -o "$OUT/run/loss.svg" --smooth 10 --title "tinyshakespeare demo"
echo "loss curve: $OUT/run/loss.svg"

step "4. anvil quantize: Q8_0 and Q4_K_M"
"$BIN/anvil" quantize "$OUT/run/model.gguf" "$OUT/model-q8_0.gguf" q8_0 -q
"$BIN/anvil" quantize "$OUT/run/model.gguf" "$OUT/model-q4_k_m.gguf" q4_k_m -q
ls -l "$OUT/run/model.gguf" "$OUT/model-q8_0.gguf" "$OUT/model-q4_k_m.gguf"

step "5. anvil eval compare: quantized vs f32 on the validation text"
for q in q8_0 q4_k_m; do
  echo "-- $q"
  "$BIN/anvil" eval compare "$OUT/run/model.gguf" "$OUT/model-$q.gguf" --text "$OUT/val.txt" -c 128 -q
done

step "6. anvil run: samples"
for m in run/model.gguf model-q8_0.gguf model-q4_k_m.gguf; do
  echo "-- $m"
  "$BIN/anvil" run "$OUT/$m" -p "ROMEO:" -n 80 --seed 42 2>/dev/null
  echo
done

step "7. anvil convert: the bundled llama2.c stories260K -> GGUF, and run it"
"$BIN/anvil" convert models/stories260K.bin "$OUT/stories260K.gguf" --tokenizer models/tok512.bin -q
"$BIN/anvil" run "$OUT/stories260K.gguf" -p "Once upon a time" -n 60 --temp 0 2>/dev/null
echo

step "done. Outputs:"
cat <<EOT
  $OUT/tokenizer.json            BPE tokenizer (HF tokenizer.json)
  $OUT/data/                     token shards (train.bin, val.bin, meta.json)
  $OUT/run/model.gguf            trained model, f32, tokenizer embedded (anvil run / llama.cpp)
  $OUT/run/hf/                   the same as an HF folder (config.json, model.safetensors)
  $OUT/run/metrics.jsonl         loss, lr, grad norm, tokens/s, MFU per step; validation loss
  $OUT/run/loss.svg              the loss curves
  $OUT/run/checkpoint.safetensors  parameters + AdamW state (anvil train --resume)
  $OUT/model-q8_0.gguf, $OUT/model-q4_k_m.gguf   quantized
  $OUT/stories260K.gguf          the converted llama2.c model
EOT
