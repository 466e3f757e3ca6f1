#!/usr/bin/env bash
# LoRA adapters (llama.cpp GGUF layout): --lora on eval/run and `anvil lora merge`
# against llama.cpp's numbers in shared/reference/lora (perplexity, merged greedy text).
. "$(dirname "$0")/lib.bash"
L=$SHARED/reference/lora
BASE=$SHARED/reference/llamacpp/stories-d256-f32.gguf
AD=$L/adapter-lora.gguf
PY=python3
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$SHARED/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
if [ ! -x "$LLAMA_DIR/llama-simple" ] && [ -f "$LLAMA_ARCHIVE" ]; then
  mkdir -p "$LLAMA_DIR" && tar xJf "$LLAMA_ARCHIVE" -C "$LLAMA_DIR" 2>/dev/null
fi
ref() { $PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$L/lora-llamacpp.json" "$1"; }
ppl_of() { $PY -c 'import json,sys; print(json.loads(sys.argv[1])["ppl"])' "$1" 2>/dev/null; }
close() { $PY -c 'import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b) <= t*b else 1)' "$@"; }

# peak resident memory (KiB) of a command, into HWM; empty without GNU time
HAVE_TIME=0; [ -x /usr/bin/time ] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null && HAVE_TIME=1
grep -qa __asan_init "$BIN/anvil-eval" && HAVE_TIME=0 # ASan's shadow memory swamps RSS
timed() { HWM=; if [ $HAVE_TIME = 1 ]; then run /usr/bin/time -f %M -o "$TMP/.hwm" "$@"; HWM=$(tail -1 "$TMP/.hwm"); else run "$@"; fi; }

want=$(ref 'j["ppl_with_adapter"]["ppl"]')
timed "$BIN/anvil" eval perplexity "$BASE" --lora "$AD" --text "$L/shakespeare-eval.txt" -c 256 --json -q
p_lora=$(ppl_of "$OUT"); hwm_f32=$HWM
check "eval perplexity --lora (applied at run time): PPL $p_lora = llama.cpp's $want within 0.1 %" close "${p_lora:-0}" "$want" 0.001

run "$BIN/anvil" lora merge "$BASE" "$AD" -o "$TMP/merged.gguf" -q
check "lora merge exits 0" [ "$RC" -eq 0 -a -s "$TMP/merged.gguf" ]
run "$BIN/anvil" eval perplexity "$TMP/merged.gguf" --text "$L/shakespeare-eval.txt" -c 256 --json -q
p_merged=$(ppl_of "$OUT")
check "  the merge's PPL ($p_merged) equals --lora's ($p_lora) within 1e-6" close "${p_merged:-0}" "${p_lora:-1}" 1e-6
for i in 0 1; do
  prompt=$(ref "j['greedy_merged'][$i]['prompt']")
  [ "$i" -eq 1 ] && prompt=$'First Citizen:\n'
  expect=$(ref "j['greedy_merged'][$i]['stdout'][4:154]")
  got=$( { printf '%s' "$prompt"; "$BIN/anvil" run "$TMP/merged.gguf" -p "$prompt" -n 100 --temp 0 2>/dev/null; } | head -c 150)
  check "  greedy text of the merge = llama-simple's on the llama.cpp merge (prompt $i, 150 chars)" [ "$got" = "${expect:0:150}" ]
  got2=$( { printf '%s' "$prompt"; "$BIN/anvil" run "$BASE" --lora "$AD" -p "$prompt" -n 100 --temp 0 2>/dev/null; } | head -c 150)
  check "  run --lora gives the same text (prompt $i)" [ "$got2" = "$got" ]
done
g0=$("$BIN/anvil" run "$BASE" -p "Once upon" -n 20 --temp 0 2>/dev/null)
g1=$("$BIN/anvil" run "$BASE" --lora "$AD:0" -p "Once upon" -n 20 --temp 0 2>/dev/null)
check "--lora ADAPTER:0 generates what the base does" [ -n "$g0" -a "$g0" = "$g1" ]
g2=$("$BIN/anvil" run "$BASE" --lora "$AD" -p "ROMEO:" -n 60 --temp 0 2>/dev/null)
g3=$("$BIN/anvil" run "$BASE" --lora "$AD:0.25" --lora "$AD:0.75" -p "ROMEO:" -n 60 --temp 0 2>/dev/null)
check "two adapters at once add up: A:0.25 + A:0.75 generates what A does" [ -n "$g2" -a "$g2" = "$g3" ]

# a quantized base: the adapter runs beside the Q8_0 blocks (nothing dequantized)
"$BIN/anvil" quantize "$BASE" "$TMP/q8.gguf" q8_0 -q >/dev/null 2>&1
run "$BIN/anvil" lora merge "$BASE" "$AD" -o "$TMP/merged-q8.gguf" --outtype q8_0 -q
check "lora merge --outtype q8_0 exits 0" [ "$RC" -eq 0 -a -s "$TMP/merged-q8.gguf" ]
"$BIN/anvil" quantize "$TMP/merged.gguf" "$TMP/merged-then-q8.gguf" q8_0 -q >/dev/null 2>&1
check "  byte-identical to merge-to-f32 followed by anvil quantize q8_0" cmp -s "$TMP/merged-q8.gguf" "$TMP/merged-then-q8.gguf"
run "$BIN/anvil" lora merge "$BASE" "$AD" -o "$TMP/merged-q4km.gguf" --outtype Q4_K_M -q
"$BIN/anvil" quantize "$TMP/merged.gguf" "$TMP/merged-then-q4km.gguf" q4_k_m -q >/dev/null 2>&1
check "  --outtype Q4_K_M likewise (the mix's per-tensor types)" cmp -s "$TMP/merged-q4km.gguf" "$TMP/merged-then-q4km.gguf"
EV=(--text "$L/shakespeare-eval.txt" -c 256 --chunks 64 --json -q)
timed "$BIN/anvil" eval perplexity "$TMP/q8.gguf" --lora "$AD" "${EV[@]}"
p_q8=$(ppl_of "$OUT"); hwm_q8_lora=$HWM
run "$BIN/anvil" eval perplexity "$TMP/merged-q8.gguf" "${EV[@]}"
p_mq8=$(ppl_of "$OUT")
check "Q8_0 base --lora (64 chunks): PPL $p_q8 close to the merged-then-quantized model's $p_mq8 (0.1 %)" close "${p_q8:-0}" "${p_mq8:-1}" 0.001
if [ $HAVE_TIME = 1 ]; then
  timed "$BIN/anvil" eval perplexity "$TMP/q8.gguf" "${EV[@]}"
  hwm_q8=$HWM
  check "  peak RSS stays near the quantized model's: ${hwm_q8_lora} KiB with the adapter, ${hwm_q8} KiB without, ${hwm_f32} KiB for f32 + adapter" \
    bash -c '[ $(($1 - $2)) -lt 3072 ] && [ $(($3 - $1)) -gt 6144 ]' _ "$hwm_q8_lora" "$hwm_q8" "$hwm_f32"
else
  echo "# SKIP peak RSS check: no GNU time at /usr/bin/time, or a sanitizer build — not counted as a pass"
fi

if [ -x "$LLAMA_DIR/llama-export-lora" ] && [ -x "$LLAMA_DIR/llama-simple" ]; then
  "$LLAMA_DIR/llama-export-lora" -m "$BASE" --lora "$AD" -o "$TMP/llama-merged.gguf" >/dev/null 2>&1
  "$BIN/anvil" convert "$TMP/merged.gguf" "$TMP/a.safetensors" -q
  "$BIN/anvil" convert "$TMP/llama-merged.gguf" "$TMP/b.safetensors" -q
  cmpres=$(/usr/bin/python3 - "$TMP/a.safetensors" "$TMP/b.safetensors" 2>&1 <<'EOF'
import json, struct, sys
import numpy as np
def load(p):
    raw = open(p, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]], dtype=np.float32)
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert set(a) == set(b), "tensor names differ"
worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
print("ok %.3g" % worst if worst <= 1e-5 else "max diff %.3g" % worst)
EOF
)
  check "every merged tensor equals llama-export-lora's within 1e-5 ($cmpres)" [ "${cmpres%% *}" = ok ]
  L2=$("$LLAMA_DIR/llama-simple" -m "$TMP/merged.gguf" -n 100 "ROMEO:" 2>/dev/null | head -c 154)
  check "llama.cpp (llama-simple) runs anvil's merge: its reference greedy text" [ "$L2" = "$(ref "j['greedy_merged'][0]['stdout'][:154]")" ]
else
  echo "# SKIP llama.cpp checks: tools archive not found ($LLAMA_ARCHIVE) — not counted as a pass"
fi

# bad input: one line naming the adapter, exit 1 (2 for usage), nothing written
expect_fail "adapter for another base (shapes)" adapter-lora.gguf 1 \
  "$BIN/anvil" lora merge "$SHARED/reference/llamacpp/stories260K-f32.gguf" "$AD" -o "$TMP/x.gguf" -q
check "  nothing written" [ ! -e "$TMP/x.gguf" ]
expect_fail "a model file given as the adapter" stories-d256-f32.gguf 1 "$BIN/anvil" lora merge "$BASE" "$BASE" -o "$TMP/x.gguf" -q
expect_fail "non-numeric scale (usage)" "abc" 2 "$BIN/anvil" lora merge "$BASE" "$AD:abc" -o "$TMP/x.gguf" -q
expect_fail "missing adapter" "$TMP/none.gguf" 1 "$BIN/anvil" lora merge "$BASE" "$TMP/none.gguf" -o "$TMP/x.gguf" -q
expect_fail "run --lora with an adapter for another base" adapter-lora.gguf 1 \
  "$BIN/anvil" run "$SHARED/reference/llamacpp/stories260K-f32.gguf" --lora "$AD" -p hi -n 2
# crafted adapters: through safetensors (anvil keeps GGUF metadata there) and back
"$BIN/anvil" convert "$AD" "$TMP/ad.safetensors" -q
craft() { # OUT.gguf PYTHON-EXPR-ON-HEADER
  /usr/bin/python3 - "$TMP/ad.safetensors" "$TMP/c.safetensors" "$2" <<'EOF'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
exec(sys.argv[3])
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
EOF
  "$BIN/anvil" convert "$TMP/c.safetensors" "$1" -q
}
craft "$TMP/unknown.gguf" 'h["blk.0.attn_zz.weight.lora_a"]=h.pop("blk.0.attn_q.weight.lora_a"); h["blk.0.attn_zz.weight.lora_b"]=h.pop("blk.0.attn_q.weight.lora_b")'
expect_fail "unknown target name" "attn_zz" 1 "$BIN/anvil" lora merge "$BASE" "$TMP/unknown.gguf" -o "$TMP/x.gguf" -q
craft "$TMP/rank.gguf" 't=h["blk.1.ffn_up.weight.lora_b"]; t["shape"]=[t["shape"][0]*2, t["shape"][1]//2]'
expect_fail "A/B rank mismatch" "rank mismatch" 1 "$BIN/anvil" lora merge "$BASE" "$TMP/rank.gguf" -o "$TMP/x.gguf" -q
craft "$TMP/noalpha.gguf" 'h["__metadata__"].pop("gguf:adapter.lora.alpha", None); h["__metadata__"].pop("adapter.lora.alpha", None)'
run "$BIN/anvil" lora merge "$BASE" "$TMP/noalpha.gguf" -o "$TMP/na.gguf"
check "adapter without alpha: merged, and the message says the factor used (alpha = r, as llama.cpp)" \
  bash -c '[ "$1" -eq 0 ] && grep -q "no adapter.lora.alpha" <<<"$2"' _ "$RC" "$ERR"

# PEFT folder <-> llama.cpp GGUF adapter (anvil convert; head counts from the base)
run "$BIN/anvil" convert "$L/adapter-peft" "$TMP/from-peft.gguf" --base "$BASE" -q
check "PEFT -> GGUF adapter exits 0" [ "$RC" -eq 0 ]
check "  the file is byte-identical to llama.cpp's adapter-lora.gguf" cmp -s "$TMP/from-peft.gguf" "$AD"
"$BIN/anvil" convert "$SHARED/reference/llamacpp/stories-d256-f32.gguf" "$TMP/d256-hf/" -q >/dev/null 2>&1
run "$BIN/anvil" convert "$AD" "$TMP/peft" --config "$TMP/d256-hf/config.json" -q
same=$(/usr/bin/python3 - "$TMP/peft/adapter_model.safetensors" "$L/adapter-peft/adapter_model.safetensors" "$TMP/peft/adapter_config.json" <<'PY' 2>&1
import json, struct, sys
def load(p):
    raw = open(p, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
    return {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
c = json.load(open(sys.argv[3]))
ok = set(a) == set(b) and all(a[k] == b[k] for k in b) and c["r"] == 8 and c["lora_alpha"] == 16
ok = ok and sorted(c["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
print("ok" if ok else "differ")
PY
)
check "GGUF adapter -> PEFT (heads from --config): every tensor equals the PEFT file's, config r/alpha/targets ($same)" [ "$RC" -eq 0 -a "$same" = ok ]
run "$BIN/anvil" lora convert "$TMP/peft" "$TMP/round.gguf" --heads 8 --kv-heads 4 -q
check "PEFT -> GGUF -> PEFT -> GGUF round trip is byte-identical (anvil lora convert)" cmp -s "$TMP/round.gguf" "$AD"
run "$BIN/anvil" lora convert "$L/adapter-peft" "$TMP/wrongheads.gguf" --heads 4 --kv-heads 2 -q
check "PEFT -> GGUF with wrong head counts does not give llama.cpp's file (the permutation matters)" bash -c '! cmp -s "$1" "$2"' _ "$TMP/wrongheads.gguf" "$AD"
expect_fail "PEFT -> GGUF without head counts" "head counts" 1 "$BIN/anvil" convert "$L/adapter-peft" "$TMP/nohead.gguf" -q

run "$BIN/anvil" lora --help
check "lora --help exits 0 and lists merge and convert" bash -c '[ "$1" -eq 0 ] && grep -q "lora merge" <<<"$2" && grep -q "lora convert" <<<"$2"' _ "$RC" "$OUT"
run "$BIN/anvil" lora
check "lora without a command exits 2" [ "$RC" -eq 2 ]
expect_fail "merge without -o (usage)" "-o" 2 "$BIN/anvil" lora merge "$BASE" "$AD"
expect_fail "merge --outtype q9_9 (usage)" "q9_9" 2 "$BIN/anvil" lora merge "$BASE" "$AD" -o "$TMP/x.gguf" --outtype q9_9
expect_fail "merge --outtype q8_0 into safetensors (usage: no block types)" "q8_0" 2 \
  "$BIN/anvil" lora merge "$BASE" "$AD" -o "$TMP/x.safetensors" --outtype q8_0
check "  nothing written" [ ! -e "$TMP/x.gguf" -a ! -e "$TMP/x.safetensors" ]
for t in run eval lora; do
  run "$BIN/anvil" $t --help
  check "$t --help says adapters are applied at run time" grep -q "at run time" <<<"$OUT"
done
