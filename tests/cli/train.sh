#!/usr/bin/env bash
# anvil train: the loop end to end on a tiny model — bit-exact resume after
# kill -9 and SIGTERM, NaN stop, bad configs and checkpoints, --config,
# --init, exports that `anvil run` and `anvil convert` read, --bench.
. "$(dirname "$0")/lib.bash"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TXT=$REPO/datasets/tinyshakespeare.txt
PY=python3
/usr/bin/python3 -c 'import json' 2>/dev/null && PY=/usr/bin/python3
cd "$TMP"

"$BIN/anvil" tokenizer train "$TXT" --vocab-size 384 --special '<|endoftext|>' -o tok.json -q
"$BIN/anvil" train prepare --tokenizer tok.json "$TXT" -o data -q
check "dataset prepared" [ -s data/train.bin -a -s data/val.bin ]

# tiny model, 2 threads, dropout on: every run with these settings takes the same steps
ARGS=(--data data --steps 40 --dim 128 --layers 2 --heads 4 --kv-heads 2 --ffn 256 --seq 64 --batch 8
      --warmup 5 --eval-every 10 --eval-batches 2 --ckpt-every 7 --dropout 0.1 -t 2 -q)
strip() { sed 's/,"tokens_per_s".*//' "$1"; } # drop the timing fields

run "$BIN/anvil" train "${ARGS[@]}" -o ra --json
check "uninterrupted run exits 0" [ "$RC" -eq 0 ]
check "  metrics: 40 train lines, 4 validation lines" \
  [ "$(grep -c '"type":"train"' ra/metrics.jsonl)" -eq 40 -a "$(grep -c '"type":"val"' ra/metrics.jsonl)" -eq 4 ]
check "  --json names the outputs" bash -c 'grep -q "\"gguf\":\"ra/model.gguf\"" <<<"$1"' _ "$OUT"
stats=$($PY - ra/metrics.jsonl <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tr = [r for r in rows if r["type"] == "train"]; va = [r for r in rows if r["type"] == "val"]
first, last = tr[0]["loss"], sum(r["loss"] for r in tr[-5:]) / 5
ok = abs(first - math.log(384)) < 0.15 and last < first - 0.5 and va[-1]["val_loss"] < va[0]["val_loss"]
ok = ok and all(r["step"] == i + 1 for i, r in enumerate(tr)) and abs(va[-1]["val_ppl"] - math.exp(va[-1]["val_loss"])) < 1e-3 * va[-1]["val_ppl"]
print("ok" if ok else "bad first=%g last=%g val=%s" % (first, last, [r["val_loss"] for r in va]))
EOF
)
check "  loss starts at ln(vocab) and falls; val loss falls; ppl = exp(loss) ($stats)" [ "$stats" = ok ]
check "  checkpoint, GGUF and HF folder written" [ -s ra/checkpoint.safetensors -a -s ra/model.gguf -a -s ra/hf/config.json -a -s ra/hf/model.safetensors ]
run "$BIN/anvil" run ra/model.gguf -p "ROMEO:" -n 8 --temp 0 --json
ids=$($PY -c 'import json,sys; j=json.loads(sys.argv[1]); print(len(j["ids"]), len(j["prompt_ids"]) > 0)' "$OUT" 2>&1)
check "  anvil run generates from the GGUF with its embedded tokenizer ($ids)" [ "$RC" -eq 0 -a "$ids" = "8 True" ]
run "$BIN/anvil" run ra/hf -p "ROMEO:" -n 8 --temp 0 --tokenizer tok.json
gg=$("$BIN/anvil" run ra/model.gguf -p "ROMEO:" -n 8 --temp 0 2>/dev/null | od -c | md5sum)
hh=$("$BIN/anvil" run ra/hf -p "ROMEO:" -n 8 --temp 0 --tokenizer tok.json 2>/dev/null | od -c | md5sum)
check "  the HF folder generates what the GGUF does" [ "$RC" -eq 0 -a "$gg" = "$hh" ]
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$SHARED/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
if [ ! -x "$LLAMA_DIR/llama-simple" ] && [ -f "$LLAMA_ARCHIVE" ]; then
  mkdir -p "$LLAMA_DIR" && tar xJf "$LLAMA_ARCHIVE" -C "$LLAMA_DIR" 2>/dev/null
fi
if [ -x "$LLAMA_DIR/llama-simple" ]; then
  # llama-simple echoes the prompt and generates greedily; anvil prints only the continuation
  L=$("$LLAMA_DIR/llama-simple" -m ra/model.gguf -n 12 "ROMEO:" 2>/dev/null | od -c)
  A=$( { printf 'ROMEO:'; "$BIN/anvil" run ra/model.gguf -p "ROMEO:" -n 12 --temp 0 2>/dev/null; echo; } | od -c)
  check "  llama.cpp (llama-simple) loads the trained GGUF and generates what anvil run does" \
    bash -c '[ -n "$0" ] && [ "$0" = "$1" ]' "$L" "$A"
else
  echo "# SKIP llama-simple check: llama.cpp tools archive not found ($LLAMA_ARCHIVE) — not counted as a pass"
fi
run "$BIN/anvil" convert ra/checkpoint.safetensors ck.gguf
check "  the checkpoint is a safetensors file anvil convert reads" [ "$RC" -eq 0 -a -s ck.gguf ]

# kill -9 at a random step, then --resume: every later step equals the uninterrupted run
k=$((9 + RANDOM % 28)) # after the first checkpoint (step 7)
"$BIN/anvil" train "${ARGS[@]}" -o rb & pid=$!
for _ in $(seq 1 3000); do
  [ "$(cat rb/metrics.jsonl 2>/dev/null | grep -c '"type":"train"')" -ge "$k" ] && break
  sleep 0.002
done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
got=$(grep -c '"type":"train"' rb/metrics.jsonl)
[ "$got" -lt 40 ] || echo "# the run ended before the kill (step $got): the machine is much faster than this test assumes"
run "$BIN/anvil" train "${ARGS[@]}" -o rb --resume
check "killed (-9) after step $got of 40, --resume exits 0" [ "$RC" -eq 0 ]
check "  every step's loss, lr, grad norm and val loss equal the uninterrupted run's" \
  cmp -s <(strip ra/metrics.jsonl) <(strip rb/metrics.jsonl)
check "  the final GGUF is byte-identical" cmp -s ra/model.gguf rb/model.gguf

# a finished run continued for more steps: the exports are replaced
cp -r ra rx
run "$BIN/anvil" train "${ARGS[@]}" -o rx --resume --steps 45
check "--resume --steps 45 on a finished run: 45 steps, new GGUF and HF folder" \
  bash -c '[ "$1" -eq 0 ] && [ "$(grep -c "\"type\":\"train\"" rx/metrics.jsonl)" -eq 45 ] && ! cmp -s ra/model.gguf rx/model.gguf && [ -s rx/hf/model.safetensors ] && ! cmp -s ra/hf/model.safetensors rx/hf/model.safetensors' _ "$RC"

# SIGTERM: checkpoint at the current step, exit 143, resume identically
"$BIN/anvil" train "${ARGS[@]}" -o rc 2>rc.err & pid=$!
for _ in $(seq 1 3000); do
  [ "$(cat rc/metrics.jsonl 2>/dev/null | grep -c '"type":"train"')" -ge 12 ] && break
  sleep 0.002
done
kill -TERM "$pid"; wait "$pid"; trc=$?
check "SIGTERM: exit 143, says where the checkpoint is" bash -c '[ "$1" -eq 143 ] && grep -q "terminated at step .*checkpoint saved to rc/checkpoint.safetensors" rc.err' _ "$trc"
run "$BIN/anvil" train "${ARGS[@]}" -o rc --resume
check "  --resume finishes bit-identically" bash -c '[ "$1" -eq 0 ] && cmp -s ra/model.gguf rc/model.gguf' _ "$RC"

# the same run from a config file (flags override it)
cat > cfg.json <<'EOF'
{"data": "data", "steps": 40, "dim": 128, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 256,
 "seq": 64, "batch": 8, "warmup": 5, "eval_every": 10, "eval_batches": 2, "ckpt_every": 100,
 "threads": 2, "quiet": true, "lr": 0.5, "dropout": 0.1}
EOF
run "$BIN/anvil" train --config cfg.json --lr 1e-3 -o rd
check "--config + flags gives the same run" bash -c '[ "$1" -eq 0 ] && cmp -s <(sed "s/,\"tokens_per_s\".*//" ra/metrics.jsonl) <(sed "s/,\"tokens_per_s\".*//" rd/metrics.jsonl)' _ "$RC"

# --init from the trained GGUF, from its HF folder (safetensors) and from a PyTorch
# file of it (HF names, config.json beside): the same start
mkdir pt && "$BIN/anvil" convert ra/hf pt/model.pt -q && cp ra/hf/config.json pt/
IARGS=(--data data --steps 3 --warmup 1 --batch 4 --eval-every 0 --eval-batches 2 -t 2 -q --no-hf)
run "$BIN/anvil" train "${IARGS[@]}" --init ra/model.gguf -o re
l_gguf=$(grep -m1 '"type":"train"' re/metrics.jsonl | sed 's/.*"loss":\([^,]*\).*/\1/')
run "$BIN/anvil" train "${IARGS[@]}" --init pt/model.pt -o rf
l_pt=$(grep -m1 '"type":"train"' rf/metrics.jsonl | sed 's/.*"loss":\([^,]*\).*/\1/')
run "$BIN/anvil" train "${IARGS[@]}" --init ra/hf -o rh
l_st=$(grep -m1 '"type":"train"' rh/metrics.jsonl | sed 's/.*"loss":\([^,]*\).*/\1/')
l_end=$(grep '"type":"train"' ra/metrics.jsonl | tail -1 | sed 's/.*"loss":\([^,]*\).*/\1/')
check "--init continues from the trained weights (.gguf $l_gguf, .pt $l_pt, HF $l_st, end of run $l_end)" \
  $PY -c 'import sys,math; a,b,d,c=map(float,sys.argv[1:]); sys.exit(0 if a==b==d and a < math.log(384)-0.5 and abs(a-c)<0.6 else 1)' "$l_gguf" "$l_pt" "$l_st" "$l_end"
expect_fail "--init with a contradicting --dim names the model" pt/model.pt 1 "$BIN/anvil" train "${IARGS[@]}" --init pt/model.pt --dim 256 -o rg

# NaN/Inf: a huge learning rate blows the loss up; the run stops with the step and keeps a good checkpoint
run "$BIN/anvil" train --data data --steps 20 --dim 64 --layers 2 --heads 4 --ffn 160 --seq 32 --batch 4 --warmup 0 \
  --lr 1e6 --clip 0 --eval-every 0 --ckpt-every 0 -t 2 -q --no-hf -o rn
check "non-finite loss: exit 1, one line with the step and the last good checkpoint" \
  bash -c '[ "$1" -eq 1 ] && [ "$(grep -c "" <<<"$2")" -eq 1 ] && grep -q "not finite at step [0-9]*; stopped. Last good state (step [0-9]*) saved to rn/checkpoint.safetensors" <<<"$2"' _ "$RC" "$ERR"
check "  the saved state is finite and resumable" bash -c '"$1/anvil" convert rn/checkpoint.safetensors rn.gguf -q >/dev/null 2>&1 || "$1/anvil" convert rn/checkpoint.safetensors rn.gguf >/dev/null 2>&1' _ "$BIN"

# bad settings: clear one-line errors before any step
T=(--data data --steps 5 --warmup 1 -t 2 -q --no-hf)
expect_fail "dim not divisible by heads (usage error)" "--dim 100" 2 "$BIN/anvil" train "${T[@]}" --dim 100 --heads 3 -o x1
expect_fail "kv heads not dividing heads" "--kv-heads 3" 2 "$BIN/anvil" train "${T[@]}" --dim 64 --heads 8 --kv-heads 3 -o x1
expect_fail "dataset vocabulary larger than the model's" "train.bin" 1 "$BIN/anvil" train "${T[@]}" --vocab 300 -o x1
check "  nothing written for a refused run" [ ! -e x1 ]
expect_fail "unknown option" "--frobnicate" 2 "$BIN/anvil" train "${T[@]}" --frobnicate
expect_fail "bad number" "--lr" 2 "$BIN/anvil" train "${T[@]}" --lr fast
echo '{"dim": 64, "hidden": 3}' > badcfg.json
expect_fail "unknown config key names the file" badcfg.json 2 "$BIN/anvil" train --config badcfg.json "${T[@]}"
echo '{"dim": 64,' > badcfg2.json
expect_fail "malformed config names the file" badcfg2.json 2 "$BIN/anvil" train --config badcfg2.json "${T[@]}"
expect_fail "an existing run without --resume" ra 1 "$BIN/anvil" train "${ARGS[@]}" -o ra
expect_fail "--resume without a checkpoint" "x2/checkpoint.safetensors" 1 "$BIN/anvil" train "${ARGS[@]}" -o x2 --resume
mkdir -p bad && cp ra/metrics.jsonl bad/ && cp ra/checkpoint.safetensors bad/
$PY -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(-1000,2); b=f.read(1); f.seek(-1000,2); f.write(bytes([b[0]^0x10]))' bad/checkpoint.safetensors
expect_fail "a bit flip in the checkpoint: checksum mismatch" "bad/checkpoint.safetensors" 1 "$BIN/anvil" train "${ARGS[@]}" -o bad --resume
check "  metrics.jsonl left as it was" cmp -s ra/metrics.jsonl bad/metrics.jsonl
head -c 5000 ra/checkpoint.safetensors > bad/checkpoint.safetensors
expect_fail "a truncated checkpoint" "bad/checkpoint.safetensors" 1 "$BIN/anvil" train "${ARGS[@]}" -o bad --resume
expect_fail "a safetensors file that is no checkpoint" "bad/checkpoint.safetensors" 1 \
  bash -c 'cp ra/hf/model.safetensors bad/checkpoint.safetensors && exec "$0" train "$@" -o bad --resume' "$BIN/anvil" "${ARGS[@]}"

# --bench: JSON with tokens/s and MFU against the measured sgemm peak
run "$BIN/anvil" train --bench --vocab 512 --dim 64 --layers 2 --heads 4 --ffn 160 --seq 64 --batch 4 --steps 6 -t 2
bench=$($PY -c '
import json,sys
j=json.loads(sys.argv[1])
need={"tokens_per_s","mfu","peak_gflops","flops_per_token","gflops","params","threads","batch","seq","steps","step_s"}
ok=need<=set(j) and j["tokens_per_s"]>0 and 0<j["mfu"]<1 and j["threads"]==2 and j["steps"]==4
ok=ok and abs(j["gflops"]-j["tokens_per_s"]*j["flops_per_token"]/1e9)<1e-2*j["gflops"]
print("ok" if ok else "bad")' "$OUT" 2>&1)
check "--bench prints one JSON object with consistent tokens/s, GFLOP/s and MFU" [ "$RC" -eq 0 -a "$bench" = ok ]
run "$BIN/anvil" train plot ra/metrics.jsonl -o loss.svg
check "train plot draws the run" [ "$RC" -eq 0 -a -s loss.svg ]
