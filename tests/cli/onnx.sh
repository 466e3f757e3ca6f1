#!/usr/bin/env bash
# ONNX: anvil info on torch's stories260K.onnx; import (tensors byte-identical to the
# llama2.c conversion, greedy text equal to llama.cpp's); export checked by onnx.checker
# (Debian python3-onnx) and run in onnxruntime-node (logits within 1e-4 of PyTorch's,
# --kv-cache greedy equal to anvil run); round trips; hostile and unmappable files.
# onnxruntime-node is installed here when missing (npm, --ignore-scripts); when that or
# python3-onnx is unavailable the checks that need them FAIL (never skipped).
. "$(dirname "$0")/lib.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TORCH=$SHARED/reference/torch
ONNX=$TORCH/stories260K.onnx
REF=$SHARED/reference/llamacpp
CONV=$BIN/anvil-convert
INFO=$BIN/anvil-info
PY=/usr/bin/python3
NODE_DIR=${ANVIL_NODE_DIR:-$HOME/.cache/anvil/node}
export ANVIL_NODE_DIR=$NODE_DIR
quiet() { "$@" >/dev/null; }
IDS=$($PY -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["input_ids"])))' "$TORCH/logits.json")

# ---- info ----
run "$INFO" "$ONNX"
check "info: IR version, opset, producer" grep -q 'IR version 8, producer pytorch 1.13.0' <<<"$OUT"
check "info: input_ids [1, sequence], logits [1, sequence, 512]" \
  bash -c 'grep -qE "input_ids +int64 +\[1, sequence\]" <<<"$0" && grep -qE "logits +float +\[1, sequence, 512\]" <<<"$0"' "$OUT"
check "info: 48 initializers with dtype, shape, bytes" \
  bash -c 'grep -q "initializers: 48" <<<"$0" && grep -qE "onnx::MatMul_1376 +float +\[64, 512\] +131072" <<<"$0"' "$OUT"
check "info: op histogram as the README counts it" \
  bash -c 'grep -qE "^ +Constant +363$" <<<"$0" && grep -qE "^ +MatMul +46$" <<<"$0" && grep -q "992 nodes" <<<"$0"' "$OUT"
"$INFO" "$ONNX" --json >"$TMP/info.json" 2>&1
check "info --json: opsets, ops, initializers" $PY -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "onnx" and d["ir_version"] == 8 and d["opsets"] == [{"domain": "ai.onnx", "version": 17}]
assert d["ops"]["Unsqueeze"] == 114 and len(d["initializers"]) == 48 and d["inputs"][0]["shape"] == [1, "sequence"]' "$TMP/info.json"

# ---- import: torch.onnx.export graph -> GGUF ----
"$CONV" "$SHARED/models/stories260K.bin" "$TMP/bin.gguf" --tokenizer "$SHARED/models/tok512.bin" -q
run "$CONV" "$ONNX" "$TMP/onnx.gguf" --tokenizer "$SHARED/models/tok512.bin" -q
check "import: stories260K.onnx -> GGUF exits 0" [ "$RC" -eq 0 ]
run $PY "$ROOT/scripts/onnx/gguf_tensors_equal.py" "$INFO" "$TMP/bin.gguf" "$TMP/onnx.gguf"
check "import: 48/48 tensors byte-identical to the llama2.c .bin conversion ($OUT)" [ "$RC" -eq 0 ]
check "import: llama.* metadata equal to the .bin conversion's" bash -c \
  'diff <("$0" "$1" | grep -E "^  llama\.") <("$0" "$2" | grep -E "^  llama\.")' "$INFO" "$TMP/bin.gguf" "$TMP/onnx.gguf"
"$BIN/anvil-run" "$TMP/onnx.gguf" -p "Once upon a time" -n 200 --temp 0 --json -q >"$TMP/g.json" 2>&1
check "import: greedy ids and text equal llama.cpp's (greedy.json)" python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))[0]
assert e["prompt"] == "Once upon a time"
assert d["ids"] == e["generated_ids"] and d["text"] == e["output_text"]' "$TMP/g.json" "$REF/greedy.json"
run "$CONV" "$ONNX" "$TMP/onnx.safetensors" -q
check "import: to .safetensors too" [ "$RC" -eq 0 -a -s "$TMP/onnx.safetensors" ]

# ---- hostile and unmappable files (python3-onnx makes them from the good one) ----
mk() { $PY "$ROOT/scripts/onnx/mutate.py" "$ONNX" "$TMP/m/sub/$1.onnx" "$1"; }
mkdir -p "$TMP/m/sub"
for k in overflow short ext-escape ext-neg deep opset domain tanh no-embed; do
  mk $k || notok "mutate.py $k (python3-onnx missing? run scripts/deps.sh)"
done
expect_fail "hostile: dims whose element count overflows" "overflows" 1 "$INFO" "$TMP/m/sub/overflow.onnx"
expect_fail "hostile: initializer data shorter than its shape" "data does not match its shape" 1 "$INFO" "$TMP/m/sub/short.onnx"
expect_fail "hostile: external data path leaving the folder" "leaves the model's folder" 1 "$INFO" "$TMP/m/sub/ext-escape.onnx"
mk ext-link && ln -s "$TMP/outside.bin" "$TMP/m/sub/link.bin" && head -c 200000 /dev/zero >"$TMP/outside.bin"
expect_fail "hostile: external data through a symlink out of the folder" "leaves the model's folder" 1 "$INFO" "$TMP/m/sub/ext-link.onnx"
expect_fail "hostile: negative external data offset" "is negative" 1 "$INFO" "$TMP/m/sub/ext-neg.onnx"
expect_fail "hostile: subgraphs nested 200 deep" "nested deeper" 1 "$INFO" "$TMP/m/sub/deep.onnx"
expect_fail "hostile: unknown required opset version" "opset 99" 1 "$INFO" "$TMP/m/sub/opset.onnx"
expect_fail "hostile: node in an unknown domain" "com.example.custom" 1 "$INFO" "$TMP/m/sub/domain.onnx"
head -c 100000 "$ONNX" >"$TMP/m/trunc.onnx"
expect_fail "hostile: truncated file" "trunc.onnx" 1 "$INFO" "$TMP/m/trunc.onnx"
expect_fail "hostile: convert fails too, nothing written" "short.onnx" 1 "$CONV" "$TMP/m/sub/short.onnx" "$TMP/m/no.gguf"
check "hostile: no output file left" bash -c '! ls "$0"/no.gguf* 2>/dev/null | grep -q .' "$TMP/m"
expect_fail "unmappable: names the first unmapped node and op (Tanh gate)" "'/layers.0/mlp/gate_proj/MatMul' (MatMul)" 1 \
  "$CONV" "$TMP/m/sub/tanh.onnx" "$TMP/m/x.gguf"
expect_fail "unmappable: input_ids not into a Gather names the Identity" "'/copy_ids' (Identity)" 1 \
  "$CONV" "$TMP/m/sub/no-embed.onnx" "$TMP/m/x.gguf"
mkdir -p "$TMP/m/ext" && $PY "$ROOT/scripts/onnx/mutate.py" "$ONNX" "$TMP/m/ext/model.onnx" ext-ok
run "$CONV" "$TMP/m/ext/model.onnx" "$TMP/ext.gguf" --tokenizer "$SHARED/models/tok512.bin" -q
check "external data (onnx.save_model one file): imports byte-identical" \
  bash -c '[ "$0" -eq 0 ] && "$1" "$2/scripts/onnx/gguf_tensors_equal.py" "$3" "$4/bin.gguf" "$4/ext.gguf" >/dev/null' "$RC" "$PY" "$ROOT" "$INFO" "$TMP"

# ---- export ----
run "$CONV" "$TMP/bin.gguf" "$TMP/e.onnx" -q
check "export: GGUF -> .onnx exits 0" [ "$RC" -eq 0 ]
check "export: onnx.checker.check_model(full_check=True) passes" $PY -c '
import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' "$TMP/e.onnx"
run "$INFO" "$TMP/e.onnx"
check "export: input_ids [batch, sequence], logits [batch, sequence, 512], opset 17" bash -c \
  'grep -qE "input_ids +int64 +\[batch, sequence\]" <<<"$0" && grep -qE "logits +float +\[batch, sequence, 512\]" <<<"$0" && grep -q "ai.onnx 17" <<<"$0"' "$OUT"
check "export: only standard RMSNorm/RoPE/SiLU ops" bash -c \
  'for o in Gather Pow ReduceMean Sqrt Div MatMul Slice Neg Concat Sigmoid Softmax Where Expand; do grep -qE "^  $o " <<<"$0" || exit 1; done' "$OUT"

# onnxruntime-node: install into the cache when missing
if ! node -e 'require(require("path").join(process.argv[1], "node_modules", "onnxruntime-node"))' "$NODE_DIR" 2>/dev/null; then
  mkdir -p "$NODE_DIR" && (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund --silent onnxruntime-node@1.30.0) >/dev/null 2>&1
fi
ORT="node $ROOT/scripts/onnx/ort_run.js"
$ORT "$TMP/e.onnx" --ids "$IDS" >"$TMP/ort.json" 2>"$TMP/ort.err"
run $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/ort.json" "$TORCH/logits.json" 1e-4
check "export: onnxruntime logits within 1e-4 of PyTorch's, argmax equal ($OUT)" [ "$RC" -eq 0 ]
[ -s "$TMP/ort.json" ] || echo "# $(head -c 300 "$TMP/ort.err")"

"$CONV" "$TMP/e.onnx" "$TMP/rt.gguf" -q 2>&1
run $PY "$ROOT/scripts/onnx/gguf_tensors_equal.py" "$INFO" "$TMP/bin.gguf" "$TMP/rt.gguf"
check "round trip GGUF -> ONNX -> GGUF: tensors byte-identical, metadata (vocabulary) kept" bash -c \
  '[ "$0" -eq 0 ] && diff <("$1" "$2" | tail -n +2) <("$1" "$3" | tail -n +2) >/dev/null' "$RC" "$INFO" "$TMP/bin.gguf" "$TMP/rt.gguf"
"$CONV" "$TMP/rt.gguf" "$TMP/rt.onnx" -q 2>&1
check "round trip ONNX -> GGUF -> ONNX: identical file, so identical logits" cmp -s "$TMP/e.onnx" "$TMP/rt.onnx"
$ORT "$TMP/rt.onnx" --ids "$IDS" >"$TMP/ort_rt.json" 2>/dev/null
run $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/ort_rt.json" "$TMP/ort.json" 0
check "round trip: onnxruntime logits of the re-export equal the first ($OUT)" [ "$RC" -eq 0 ]
"$CONV" "$ONNX" "$TMP/t.gguf" -q 2>&1 && "$CONV" "$TMP/t.gguf" "$TMP/t.onnx" -q 2>&1
$ORT "$TMP/t.onnx" --ids "$IDS" >"$TMP/ort_t.json" 2>/dev/null
run $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/ort_t.json" "$TORCH/logits.json" 1e-4
check "torch ONNX -> GGUF -> anvil ONNX: onnxruntime logits within 1e-4 of PyTorch's ($OUT)" [ "$RC" -eq 0 ]

# stories-d256 and --kv-cache: 32 greedy steps in onnxruntime equal anvil run's
for model in stories260K-f32 stories-d256-f32; do
  "$CONV" "$REF/$model.gguf" "$TMP/$model-kv.onnx" --kv-cache -q 2>&1
  "$BIN/anvil-run" "$REF/$model.gguf" -p "Once upon a time" -n 32 --temp 0 --json -q >"$TMP/$model-run.json" 2>&1
  P=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' "$TMP/$model-run.json")
  for mode in kv full; do
    if [ $mode = kv ]; then f="$TMP/$model-kv.onnx"; fl=--kv-cache; else "$CONV" "$REF/$model.gguf" "$TMP/$model.onnx" -q; f="$TMP/$model.onnx"; fl=; fi
    $ORT "$f" --ids "$P" --greedy 32 $fl >"$TMP/$model-$mode.json" 2>"$TMP/$model-$mode.err"
    check "$model ${fl:-(no cache)}: 32 greedy ids in onnxruntime equal anvil run's, logprobs within 1e-4" python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); o = json.load(open(sys.argv[2]))
assert d["ids"] == o["ids"], (d["ids"], o["ids"])
assert max(abs(a - b) for a, b in zip(d["logprobs"], o["logprobs"])) < 1e-4' "$TMP/$model-run.json" "$TMP/$model-$mode.json"
  done
done
check "--kv-cache export passes onnx.checker" $PY -c '
import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' "$TMP/stories260K-f32-kv.onnx"

# --external-data: weights beside the file, read back byte-identical
mkdir -p "$TMP/x" && run "$CONV" "$TMP/bin.gguf" "$TMP/x/ext.onnx" --external-data -q
check "--external-data: ext.onnx + ext.onnx.data written" [ "$RC" -eq 0 -a -s "$TMP/x/ext.onnx.data" ]
"$CONV" "$TMP/x/ext.onnx" "$TMP/x/ext.gguf" -q 2>&1
check "--external-data: imports back byte-identical" quiet $PY "$ROOT/scripts/onnx/gguf_tensors_equal.py" "$INFO" "$TMP/bin.gguf" "$TMP/x/ext.gguf"
$ORT "$TMP/x/ext.onnx" --ids "$IDS" >"$TMP/ort_x.json" 2>/dev/null
check "--external-data: onnxruntime loads it, same logits" quiet $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/ort_x.json" "$TMP/ort.json" 0

# usage errors
expect_fail "--opset out of range is a usage error" "--opset" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.onnx" --opset 5
expect_fail "--kv-cache with a non-ONNX output is a usage error" "onnx" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.gguf" --kv-cache
