#!/usr/bin/env bash
# anvil eval: perplexity as llama-perplexity computes it (reference values in
# ../shared/reference/llamacpp/perplexity.json), compare + --gate exit codes.
. "$(dirname "$0")/lib.bash"
EVAL="$BIN/anvil-eval"
REF=$SHARED/reference/llamacpp
TEXT=$REF/eval-text.txt

# the first 100 chunks: our PPL equals llama.cpp's running value after chunk 100 (0.1 %)
for spec in "stories260K-f32.gguf stories260K 128" "stories-d256-f32.gguf stories-d256 256"; do
  set -- $spec
  run "$EVAL" perplexity "$REF/$1" --text "$TEXT" -c "$3" --chunks 100 -t 1 --json
  check "perplexity $2 ctx $3, 100 chunks: equals llama-perplexity's running value (0.1 %)" python3 -c '
import json, sys
d = json.loads(sys.argv[1]); r = json.load(open(sys.argv[2]))["results"][sys.argv[3]]["F32"]
want = r["running"][99]
assert d["chunks"] == 100 and d["scored_tokens"] == 100 * (int(sys.argv[4]) // 2 - 1), d
assert abs(d["ppl"] / want - 1) < 1e-3, (d["ppl"], want)' "$OUT" "$REF/perplexity.json" "$2" "$3"
done

# text output: running values on stderr, final estimate on stdout
run "$EVAL" perplexity "$REF/stories260K-f32.gguf" --text "$REF/eval-text-small.txt" -c 128 -t 1
check "perplexity prints running values and a final estimate" \
  bash -c '[[ "$0" == *"[1]"* ]] && [[ "$1" == "Final estimate: PPL = "* ]]' "$ERR" "$OUT"

# compare: a model against itself is identical; gates decide the exit code
S260=$REF/stories260K-f32.gguf
run "$EVAL" compare "$S260" "$S260" --text "$REF/eval-text-small.txt" -c 128 -t 1 --json \
  --gate "ppl_ratio<=1.0001,kld<=0.000001,top1>=0.999"
check "compare a model with itself: KLD 0, top-1 100 %, gate holds (exit 0)" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["kld_mean"] < 1e-9 and d["top1"] == 1.0 and d["ppl_ratio"] == 1.0 and d["gate_ok"] is True, d' "$OUT"
check "  exit 0" test "$RC" -eq 0
D256=$REF/stories-d256-f32.gguf
"$BIN/anvil-convert" "$D256" "$TMP/d256-f16.gguf" --outtype f16 -q
run "$EVAL" compare "$D256" "$TMP/d256-f16.gguf" --text "$REF/eval-text-small.txt" -c 256 -t 1 --json \
  --gate "kld<=0.0" -q
check "compare f32 vs f16: small positive KLD, failed gate exits 3" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert 0 < d["kld_mean"] < 1e-3 and d["top1"] > 0.99 and d["gate_ok"] is False, d
assert sys.argv[2] == "3"' "$OUT" "$RC"
check "  the failed condition is named on stderr" grep -q "gate failed: kld" <<<"$ERR"

# bad input and usage
expect_fail "missing model" "nope.gguf" 1 "$EVAL" perplexity "$TMP/nope.gguf" --text "$TEXT"
expect_fail "missing text" "nope.txt" 1 "$EVAL" perplexity "$S260" --text "$TMP/nope.txt"
printf 'Once upon a time' >"$TMP/short.txt"
expect_fail "text shorter than one chunk" "tokens" 1 "$EVAL" perplexity "$S260" --text "$TMP/short.txt" -c 128
expect_fail "no --text" "--text" 2 "$EVAL" perplexity "$S260"
expect_fail "odd context" "-c" 2 "$EVAL" perplexity "$S260" --text "$TEXT" -c 127
expect_fail "bad gate metric" "bogus" 2 "$EVAL" compare "$S260" "$S260" --text "$TEXT" --gate "bogus<=1"
expect_fail "bad gate operator" "kld=1" 2 "$EVAL" compare "$S260" "$S260" --text "$TEXT" --gate "kld=1"
expect_fail "compare needs two models" "BASE and TEST" 2 "$EVAL" compare "$S260" --text "$TEXT"
expect_fail "unknown subcommand" "imatrix2" 2 "$EVAL" imatrix2 "$S260" --text "$TEXT"
check "--help" bash -c '"$0" --help | grep -q "gate"' "$EVAL"

# imatrix: the same statistics as llama-imatrix (reference imatrix-d256.gguf, ctx 256, whole text)
run "$EVAL" imatrix "$D256" --text "$TEXT" -c 256 -t 1 -q -o "$TMP/im.gguf"
check "imatrix written" test "$RC" -eq 0 -a -s "$TMP/im.gguf"
check "imatrix: same keys, tensors and counts as llama-imatrix's, values within 0.1 %" python3 -c '
import array, sys
sys.path.insert(0, sys.argv[3])
from gguf_hashes import read
mine, ref = read(sys.argv[1]), read(sys.argv[2])
assert [k for k, _, _ in mine["kv"]] == [k for k, _, _ in ref["kv"]], mine["kv"]
assert [v for k, _, v in mine["kv"]] == [v for k, _, v in ref["kv"]], (mine["kv"], ref["kv"])
assert mine["tensor_order"] == ref["tensor_order"]
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
def vals(buf, g, name):
    o = g["data_offsets"][name]
    return array.array("f", buf[o:o + g["tensors"][name]["n_bytes"]])
worst = 0
for name in ref["tensor_order"]:
    x, y = vals(a, mine, name), vals(b, ref, name)
    if name.endswith(".counts"):
        assert x == y, (name, x, y)
    for p, q in zip(x, y):
        worst = max(worst, abs(p - q) / abs(q))
assert worst < 1e-3, worst
print("# max relative difference", worst)' "$TMP/im.gguf" "$REF/imatrix-d256.gguf" "$(cd "$(dirname "$0")/../../scripts/fixtures" && pwd)"
"$BIN/anvil-quantize" "$D256" "$TMP/q4km.gguf" Q4_K_M --imatrix "$TMP/im.gguf" -q
check "anvil quantize --imatrix takes the collected file" test -s "$TMP/q4km.gguf"
expect_fail "imatrix without -o" "-o" 2 "$EVAL" imatrix "$D256" --text "$TEXT"
