#!/usr/bin/env bash
# anvil train --lora: LoRA fine-tuning of the stories-d256 base on Shakespeare —
# adapter outputs that llama.cpp loads (its perplexity = anvil's), PEFT export,
# bit-exact resume after kill -9 (with LoRA dropout), a quantized base, and
# bad input.
. "$(dirname "$0")/lib.bash"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TXT=$REPO/datasets/tinyshakespeare.txt
BASE=$SHARED/reference/llamacpp/stories-d256-f32.gguf
EVAL=$SHARED/reference/lora/shakespeare-eval.txt
cd "$TMP"

"$BIN/anvil" train prepare --tokenizer "$BASE" "$TXT" --bos -o data -q
check "dataset prepared with the base's tokenizer" [ -s data/train.bin -a -s data/val.bin ]

ARGS=(--lora --init "$BASE" --data data --steps 30 --seq 64 --batch 4 --lr 2e-3 --warmup 3 --eval-every 10
      --eval-batches 2 --ckpt-every 7 --lora-dropout 0.1 -t 2 -q)
strip() { sed 's/,"tokens_per_s".*//' "$1"; }

run "$BIN/anvil" train "${ARGS[@]}" -o ra --adapter-out ra/peft --json
check "LoRA run exits 0 and names its outputs" \
  bash -c '[ "$0" -eq 0 ] && grep -q "\"adapter\":\"ra/adapter.gguf\"" <<<"$1"' "$RC" "$OUT"
loss=$(sed -n 's/.*"type":"train","step":\([0-9]*\),"loss":\([0-9.]*\).*/\1 \2/p' ra/metrics.jsonl |
       awk '$1<=3{a+=$2;n++} $1>=28{b+=$2;m++} END{printf "%.3f %.3f", a/n, b/m}')
check "  training loss falls (first 3 steps, last 3: $loss)" awk -v s="$loss" 'BEGIN{split(s,x," "); exit !(x[2] < x[1] - 0.3)}'
run "$BIN/anvil" info ra/checkpoint.safetensors
ck_tensors=$(grep -c 'weight\.lora_[ab] ' <<<"$OUT")
ck_size=$(stat -c %s ra/checkpoint.safetensors)
base_size=$(stat -c %s "$BASE")
check "  the checkpoint holds only the adapters and their moments (168 tensors, $ck_size bytes vs base $base_size)" \
  [ "$ck_tensors" -eq 168 -a "$ck_size" -lt $((base_size / 5)) ]
run "$BIN/anvil" info ra/adapter.gguf
check "  adapter.gguf: llama.cpp's adapter keys and 56 tensors" \
  bash -c 'grep -q "general.type.*adapter" <<<"$0" && grep -q "adapter.lora.alpha.*16" <<<"$0" &&
           [ "$(grep -c "weight.lora_[ab] " <<<"$0")" -eq 56 ]' "$OUT"

# llama.cpp loads the adapter: its perplexity with --lora equals anvil's
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$SHARED/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
if [ ! -x "$LLAMA_DIR/llama-perplexity" ] && [ -f "$LLAMA_ARCHIVE" ]; then
  mkdir -p "$LLAMA_DIR" && tar xJf "$LLAMA_ARCHIVE" -C "$LLAMA_DIR" 2>/dev/null
fi
run "$BIN/anvil" eval perplexity "$BASE" --lora ra/adapter.gguf --text "$EVAL" -c 128 --chunks 24 --json
A=$(sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p' <<<"$OUT" | head -1)
run "$BIN/anvil" eval perplexity "$BASE" --text "$EVAL" -c 128 --chunks 24 --json
B0=$(sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p' <<<"$OUT" | head -1)
check "  the adapter lowers the base's perplexity on held-out Shakespeare ($B0 -> $A)" \
  awk -v a="$A" -v b="$B0" 'BEGIN{exit !(a > 0 && a < 0.8 * b)}'
if [ -x "$LLAMA_DIR/llama-perplexity" ]; then
  L=$("$LLAMA_DIR/llama-perplexity" -m "$BASE" --lora ra/adapter.gguf -f "$EVAL" -c 128 --chunks 24 -t 2 2>&1 |
      sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  check "  llama-perplexity --lora (llama.cpp) loads it: PPL $L, anvil $A (within 0.1%)" \
    awk -v a="$A" -v l="$L" 'BEGIN{d=a-l; if(d<0)d=-d; exit !(l > 0 && d <= 1e-3 * l)}'
else
  echo "# SKIP llama-perplexity check: llama.cpp tools archive not found ($LLAMA_ARCHIVE) — not counted as a pass"
fi

# PEFT folder: HF names, converts back to the same tensors
check "  --adapter-out DIR writes a PEFT folder" [ -s ra/peft/adapter_config.json -a -s ra/peft/adapter_model.safetensors ]
check "  PEFT config: r 8, lora_alpha 16" bash -c 'grep -q "\"r\": *8" "$0" && grep -q "\"lora_alpha\": *16" "$0"' ra/peft/adapter_config.json
run "$BIN/anvil" convert ra/peft back.gguf --base "$BASE"
d1=$("$BIN/anvil" info back.gguf | grep 'lora_[ab] ' | awk '{print $1, $2, $3}' | sort | md5sum)
d2=$("$BIN/anvil" info ra/adapter.gguf | grep 'lora_[ab] ' | awk '{print $1, $2, $3}' | sort | md5sum)
run "$BIN/anvil" eval perplexity "$BASE" --lora back.gguf --text "$EVAL" -c 128 --chunks 24 --json
P=$(sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p' <<<"$OUT" | head -1)
check "  PEFT -> GGUF gives the same tensors and perplexity ($P vs $A)" [ "$d1" = "$d2" -a "$P" = "$A" ]

# kill -9 at a random step, then --resume: the same steps and the same adapter bytes
k=$((9 + RANDOM % 18))
"$BIN/anvil" train "${ARGS[@]}" -o rb & pid=$!
for _ in $(seq 1 5000); do
  [ "$(cat rb/metrics.jsonl 2>/dev/null | grep -c '"type":"train"')" -ge "$k" ] && break
  sleep 0.002
done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
got=$(grep -c '"type":"train"' rb/metrics.jsonl)
run "$BIN/anvil" train "${ARGS[@]}" -o rb --resume
check "killed (-9) after step $got of 30, --resume exits 0" [ "$RC" -eq 0 ]
check "  every step's loss, grad norm and val loss equal the uninterrupted run's" \
  cmp -s <(strip ra/metrics.jsonl) <(strip rb/metrics.jsonl)
check "  the adapter is byte-identical" cmp -s ra/adapter.gguf rb/adapter.gguf

# a quantized base trains in place
"$BIN/anvil" quantize "$BASE" q8.gguf q8_0 -q 2>/dev/null
run "$BIN/anvil" train --lora --init q8.gguf --data data --steps 12 --seq 64 --batch 4 --lr 2e-3 --warmup 0 \
  --eval-every 0 --eval-batches 2 -t 2 -q -o rq
lq=$(sed -n 's/.*"type":"train","step":\([0-9]*\),"loss":\([0-9.]*\).*/\1 \2/p' rq/metrics.jsonl |
     awk '$1<=2{a+=$2;n++} $1>=11{b+=$2;m++} END{printf "%.3f %.3f", a/n, b/m}')
check "LoRA on a Q8_0 base trains (loss $lq)" \
  bash -c '[ "$0" -eq 0 ] && awk -v s="$1" "BEGIN{split(s,x,\" \"); exit !(x[2] < x[1] - 0.1)}"' "$RC" "$lq"
run "$BIN/anvil" run q8.gguf --lora rq/adapter.gguf -p "ROMEO:" -n 8 --temp 0 --json
check "  anvil run applies it to the Q8_0 base" [ "$RC" -eq 0 ]

# --bench
run "$BIN/anvil" train --bench --lora --init "$BASE" --seq 64 --batch 2 --steps 3 --bench-warmup 1 -t 1
check "--bench --lora prints tokens/s" bash -c '[ "$0" -eq 0 ] && grep -q "\"tokens_per_s\"" <<<"$1"' "$RC" "$OUT"

# bad input
expect_fail "--lora without --init: usage error" "--init" 2 "$BIN/anvil" train --lora --data data -o bad1
expect_fail "unknown LoRA target: usage error naming it" "attn_x" 2 \
  "$BIN/anvil" train --lora --init "$BASE" --data data --lora-targets attn_q,attn_x -o bad2
expect_fail "--lora-r without --lora: usage error" "--lora" 2 "$BIN/anvil" train --data data --lora-r 4 -o bad3
expect_fail "--lora with --dim: usage error" "--dim" 2 "$BIN/anvil" train --lora --init "$BASE" --data data --dim 64 -o bad4
expect_fail "--lora-r 0: usage error" "--lora-r" 2 "$BIN/anvil" train --lora --init "$BASE" --data data --lora-r 0 -o bad5
expect_fail "resume on another base: names the base" "q8.gguf" 1 \
  "$BIN/anvil" train "${ARGS[@]}" --init q8.gguf -o rb --resume --steps 40
expect_fail "resume a LoRA checkpoint without --lora" "LoRA" 1 "$BIN/anvil" train --data data -o rb --resume --steps 40
expect_fail "resume with another rank" "--lora-r" 1 "$BIN/anvil" train "${ARGS[@]}" --lora-r 4 -o rb --resume --steps 40
check "  nothing written by the failed runs" bash -c '! ls -d bad1 bad2 bad3 bad4 bad5 2>/dev/null && cmp -s ra/adapter.gguf rb/adapter.gguf'
echo "x" > notamodel.gguf
expect_fail "--init that is not a model" "notamodel.gguf" 1 \
  "$BIN/anvil" train --lora --init notamodel.gguf --data data -o bad6
cp -r rb rc
run "$BIN/anvil" train "${ARGS[@]}" -o rc --resume --steps 31 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
check "resume naming the same targets by their HF names is accepted" [ "$RC" -eq 0 ]
