#!/usr/bin/env bash
# anvil run: greedy generations equal llama.cpp's (llama-simple, reference/llamacpp/greedy.json),
# sampling options, stop strings, beam search, --bench, and bad input (exit 1 / 2, one line).
. "$(dirname "$0")/lib.bash"
REF=$SHARED/reference/llamacpp
GREEDY=$REF/greedy.json
S260=$REF/stories260K-f32.gguf
RUN=$BIN/anvil-run

# jq-free JSON checks: python3 -c CODE JSONFILE ARGS... with d = the output, r = greedy.json
pycheck() {
  local code=$1 file=$2; shift 2
  python3 - "$file" "$GREEDY" "$@" <<EOF
import json, sys
d = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2])); a = sys.argv[3:]
$code
EOF
}

# ---- greedy parity with llama.cpp: every reference entry ----
n_ref=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$GREEDY")
for ((i = 0; i < n_ref; i++)); do
  model=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["model"])' "$GREEDY" $i)
  prompt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["prompt"])' "$GREEDY" $i)
  "$RUN" "$REF/$model" -p "$prompt" -n 200 --temp 0 --json -q >"$TMP/g$i.json" 2>"$TMP/g$i.err"
  rc=$?
  check "greedy $model '$prompt': prompt ids, generated ids, text equal llama.cpp's" \
    pycheck '
e = r[int(a[0])]
assert d["prompt_ids"] == e["prompt_ids"], (d["prompt_ids"], e["prompt_ids"])
assert d["ids"] == e["generated_ids"], "ids differ at %d" % next(i for i, (x, y) in enumerate(zip(d["ids"] + [-1], e["generated_ids"])) if x != y)
assert d["text"] == e["output_text"], (d["text"][:80], e["output_text"][:80])
assert d["stop_reason"] == "length" and d["n_generated"] == 200 and len(d["logprobs"]) == 200
assert all(lp <= 0 for lp in d["logprobs"]) and d["prompt_tokens_per_s"] > 0 and d["gen_tokens_per_s"] > 0' \
    "$TMP/g$i.json" $i
  [ $rc -eq 0 ] || echo "# rc=$rc: $(head -c 300 "$TMP/g$i.err")"
done

# streamed stdout (not --json) is exactly the reference text, for a prompt and for the empty prompt
for i in 0 2; do
  prompt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["prompt"])' "$GREEDY" $i)
  "$BIN/anvil" run "$S260" -p "$prompt" -n 200 --temp 0 >"$TMP/stream.txt" 2>"$TMP/stream.err"
  check "streamed stdout equals llama-simple's output_text (prompt '$prompt')" python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))[int(sys.argv[3])]
assert open(sys.argv[2], "rb").read() == e["output_text"].encode()' "$GREEDY" "$TMP/stream.txt" $i
done
check "timing summary on stderr (load, prompt eval, generation)" \
  bash -c 'grep -q "load time" "$0" && grep -q "prompt eval time .* 1 tokens" "$0" && grep -q "generation time .* 200 tokens" "$0"' "$TMP/stream.err"

# llama2.c checkpoint + tokenizer.bin gives the same tokens as its GGUF conversion
"$RUN" "$SHARED/models/stories260K.bin" --tokenizer "$SHARED/models/tok512.bin" -p "Once upon a time" -n 200 \
  --temp 0 --json -q >"$TMP/l2c.json" 2>&1
check "llama2.c .bin + --tokenizer: same ids and text as the GGUF" pycheck '
assert d["prompt_ids"] == r[0]["prompt_ids"] and d["ids"] == r[0]["generated_ids"] and d["text"] == r[0]["output_text"]' \
  "$TMP/l2c.json"

# HF folder (rotate_half layout, HF names, config.json): mapped to GGUF layout, same tokens
for hf in hf hf-sharded; do
  "$RUN" "$SHARED/reference/torch/$hf" --tokenizer "$SHARED/models/tok512.bin" -p "Once upon a time" -n 200 \
    --temp 0 --json -q >"$TMP/$hf.json" 2>&1
  check "HF folder $hf + --tokenizer: same ids and text as the GGUF" pycheck '
assert d["prompt_ids"] == r[0]["prompt_ids"] and d["ids"] == r[0]["generated_ids"] and d["text"] == r[0]["output_text"]' \
    "$TMP/$hf.json"
done
expect_fail "HF folder without a vocabulary" "tokenizer" 1 "$RUN" "$SHARED/reference/torch/hf" -p hi

# -f FILE reads the prompt (one trailing newline dropped, as llama.cpp)
printf 'Once upon a time\n' >"$TMP/prompt.txt"
"$RUN" "$S260" -f "$TMP/prompt.txt" -n 8 --temp 0 --json -q >"$TMP/f.json" 2>&1
check "-f FILE: same prompt ids as -p" pycheck 'assert d["prompt_ids"] == r[0]["prompt_ids"] and d["ids"] == r[0]["generated_ids"][:8]' "$TMP/f.json"

# ---- sampling ----
"$RUN" "$S260" -p "Once upon a time" -n 64 --temp 0.8 --seed 42 -q >"$TMP/s42a.txt" 2>/dev/null
"$RUN" "$S260" -p "Once upon a time" -n 64 --temp 0.8 --seed 42 -q >"$TMP/s42b.txt" 2>/dev/null
"$RUN" "$S260" -p "Once upon a time" -n 64 --temp 0.8 --seed 43 -q >"$TMP/s43.txt" 2>/dev/null
check "same --seed, same text (temp 0.8)" cmp -s "$TMP/s42a.txt" "$TMP/s42b.txt"
check "different --seed, different text" bash -c '! cmp -s "$0" "$1" && [ -s "$0" ]' "$TMP/s42a.txt" "$TMP/s43.txt"
"$RUN" "$S260" -p "Once upon a time" -n 16 --temp 0.8 --seed 7 --top-k 1 --json -q >"$TMP/k1.json" 2>&1
check "--top-k 1 is greedy" pycheck 'assert d["ids"] == r[0]["generated_ids"][:16] and d["seed"] == 7' "$TMP/k1.json"

# --stop: "red ball" spans tokens; output is the reference text cut right before it
"$RUN" "$S260" -p "Once upon a time" -n 200 --temp 0 --stop "red ball" --json -q >"$TMP/stop.json" 2>&1
check "--stop: text cut before the stop string, stop_reason stop" pycheck '
want = r[0]["output_text"].split("red ball")[0]
assert d["text"] == want and d["stop_reason"] == "stop", (d["text"][-30:], d["stop_reason"])' "$TMP/stop.json"
"$RUN" "$S260" -p "Once upon a time" -n 200 --temp 0 --stop "red ball" -q >"$TMP/stop.txt" 2>&1
check "--stop: streamed output stops before it too" python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))[0]
assert open(sys.argv[2], "rb").read() == e["output_text"].split("red ball")[0].encode()' "$GREEDY" "$TMP/stop.txt"

# --logit-bias ID=-inf bans the greedy first token
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["generated_ids"][0])' "$GREEDY")
"$RUN" "$S260" -p "Once upon a time" -n 64 --temp 0 --logit-bias "$first=-inf" --json -q >"$TMP/ban.json" 2>&1
check "--logit-bias $first=-inf: token $first never generated" pycheck '
assert d["n_generated"] == 64 and int(a[0]) not in d["ids"]' "$TMP/ban.json" "$first"

# EOS: forced by a bias it ends generation (not printed); --ignore-eos keeps going
"$RUN" "$S260" -p "Once upon a time" -n 8 --temp 0 --logit-bias 2=100 --json -q >"$TMP/eos.json" 2>&1
check "EOS ends generation: stop_reason eos, nothing printed" pycheck '
assert d["stop_reason"] == "eos" and d["ids"] == [] and d["text"] == ""' "$TMP/eos.json"
"$RUN" "$S260" -p "Once upon a time" -n 3 --temp 0 --logit-bias 2=100 --ignore-eos --json -q >"$TMP/ieos.json" 2>&1
check "--ignore-eos: generation continues past EOS" pycheck '
assert d["stop_reason"] == "length" and d["ids"] == [2, 2, 2]' "$TMP/ieos.json"

# -n -1 runs until the context is full: positions 0..c-1 hold prompt + all generated tokens but the last
"$RUN" "$S260" -p "Once upon a time" -n -1 -c 40 --temp 0 --json -q >"$TMP/ctx.json" 2>&1
check "-n -1 -c 40: stop_reason context after 36 tokens" pycheck '
assert d["stop_reason"] == "context" and d["n_generated"] == 36 and d["ids"] == r[0]["generated_ids"][:36]' "$TMP/ctx.json"

# ---- beam search ----
"$RUN" "$S260" -p "Once upon a time" -n 200 --beams 1 --json -q >"$TMP/b1.json" 2>&1
check "--beams 1 equals greedy" pycheck 'assert d["ids"] == r[0]["generated_ids"], d.get("ids", d)' "$TMP/b1.json"
"$RUN" "$S260" -p "Once upon a time" -n 32 --beams 4 --json -q >"$TMP/b4.json" 2>&1
check "--beams 4 returns a hypothesis with per-token logprobs" pycheck '
assert 0 < d["n_generated"] <= 32 and len(d["logprobs"]) == d["n_generated"] and d["stop_reason"] in ("length", "eos")
assert sum(d["logprobs"]) / len(d["logprobs"]) >= -10' "$TMP/b4.json"

# ---- --bench ----
"$RUN" "$S260" --bench 16,16 -r 2 -t 1 --json >"$TMP/bench.json" 2>&1
check "--bench 16,16 --json: pp and tg tokens/s, weight bytes" pycheck '
assert d["pp_tokens_per_s"] > 0 and d["tg_tokens_per_s"] > 0 and d["n_threads"] == 1 and d["weight_bytes"] > 0' "$TMP/bench.json"

# ---- bad input: one line naming the file, exit 1 ----
MK=$(dirname "$0")/../../scripts/fixtures/mkbad_gguf.py
python3 "$MK" "$S260" "$TMP/arch.gguf" --set-str general.architecture gpt2
python3 "$MK" "$S260" "$TMP/nokey.gguf" --drop llama.block_count
python3 "$MK" "$S260" "$TMP/shape.gguf" --dims blk.1.attn_q.weight 32,128
expect_fail "unsupported architecture" "$TMP/arch.gguf" 1 "$RUN" "$TMP/arch.gguf" -p hi -n 4
check "  names the architecture" grep -q "gpt2" <<<"$ERR"
expect_fail "missing llama.block_count" "$TMP/nokey.gguf" 1 "$RUN" "$TMP/nokey.gguf" -p hi -n 4
check "  names the key" grep -q "llama.block_count" <<<"$ERR"
expect_fail "tensor shape mismatch" "$TMP/shape.gguf" 1 "$RUN" "$TMP/shape.gguf" -p hi -n 4
check "  names the tensor" grep -q "blk.1.attn_q.weight" <<<"$ERR"
expect_fail "nonexistent model" "$TMP/nope.gguf" 1 "$RUN" "$TMP/nope.gguf" -p hi
expect_fail "prompt longer than -c" "context is 4" 1 "$RUN" "$S260" -p "Once upon a time there was a little dog" -c 4
expect_fail "missing prompt file" "$TMP/nope.txt" 1 "$RUN" "$S260" -f "$TMP/nope.txt"
expect_fail "--logit-bias id outside the vocabulary" "vocabulary" 1 "$RUN" "$S260" --logit-bias 512=1 -n 1
expect_fail "llama2.c checkpoint without --tokenizer" "--tokenizer" 2 "$RUN" "$SHARED/models/stories260K.bin" -p hi

# ---- usage errors: one line, exit 2 ----
expect_fail "no MODEL" "MODEL" 2 "$RUN" -p hi
expect_fail "bad -n" "-n" 2 "$RUN" "$S260" -n ten
expect_fail "-n missing its value" "-n" 2 "$RUN" "$S260" -n
expect_fail "--logit-bias not ID=VALUE" "--logit-bias" 2 "$RUN" "$S260" --logit-bias 5
expect_fail "--logit-bias bad value" "--logit-bias" 2 "$RUN" "$S260" --logit-bias 5=abc
expect_fail "unknown option" "--bogus" 2 "$RUN" "$S260" --bogus
expect_fail "bad --temp" "--temp" 2 "$RUN" "$S260" --temp hot
expect_fail "bad --bench" "--bench" 2 "$RUN" "$S260" --bench 128
run "$RUN" --help
check "--help lists every option with its default" bash -c '
for o in -p -f -n -c -b -t --tokenizer --seed --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n \
         --frequency-penalty --presence-penalty --logit-bias --stop --ignore-eos --beams --length-penalty --json \
         --quiet --bench --reps; do grep -qe "$o" <<<"$0" || { echo "# missing $o"; exit 1; }; done
grep -q "default 128" <<<"$0" && grep -q "default 0.8" <<<"$0"' "$OUT"
check "anvil dispatcher lists run as built" bash -c '"$0/anvil" --help | grep -E "^  run " | grep -vq "not built"' "$BIN"
