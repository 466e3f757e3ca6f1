#!/usr/bin/env bash
# ONNX: anvil info on torch's stories260K.onnx; import (tensors byte-identical to the
# llama2.c conversion, greedy text equal to llama.cpp's); export checked by onnx.checker
# (Debian python3-onnx) and run in onnxruntime-node (logits within 1e-4 of PyTorch's,
# --kv-cache greedy equal to anvil run); round trips; --int8 sym|asym (checker, size, top-1
# agreement with f32 in onnxruntime over eval-text-small, import); hostile and unmappable files.
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
"$BIN/anvil-run" "$ONNX" --tokenizer "$SHARED/models/tok512.bin" -p "Once upon a time" -n 200 --temp 0 --json -q \
  >"$TMP/g2.json" 2>&1
check "anvil run on the .onnx itself: the same greedy ids and text" python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))[0]
assert d["ids"] == e["generated_ids"] and d["text"] == e["output_text"]' "$TMP/g2.json" "$REF/greedy.json"
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
    # left padding: batch 2, row 0 = 3 masked pad tokens + the prompt (position_ids shifted), row 1 unpadded
    $ORT "$f" --ids "$P" >"$TMP/$model-$mode-1.json" 2>/dev/null
    $ORT "$f" --ids "$P" --left-pad 3 >"$TMP/$model-$mode-pad.json" 2>/dev/null
    check "$model ${fl:-(no cache)}: left-padded batch (attention_mask, position_ids): real tokens' logits within 1e-4 of the unpadded run's" \
      $PY -c '
import json, sys
a = json.load(open(sys.argv[1]))["logits"]; b = json.load(open(sys.argv[2]))
assert len(a) == len(b["logits"]) == len(b["logits1"]) > 1
for rows in (b["logits"], b["logits1"]):
    d = max(abs(x - y) for r, s in zip(a, rows) for x, y in zip(r, s))
    assert d < 1e-4, d' "$TMP/$model-$mode-1.json" "$TMP/$model-$mode-pad.json"
  done
done
run "$INFO" "$TMP/stories260K-f32-kv.onnx"
check "--kv-cache export: inputs attention_mask [batch, total_sequence], position_ids [batch, sequence]" bash -c \
  'grep -qE "attention_mask +int64 +\[batch, total_sequence\]" <<<"$0" && grep -qE "position_ids +int64 +\[batch, sequence\]" <<<"$0"' "$OUT"
"$CONV" "$TMP/stories260K-f32-kv.onnx" "$TMP/kv-imp.gguf" -q 2>&1
check "--kv-cache export (with attention_mask, position_ids) imports back byte-identical" \
  quiet $PY "$ROOT/scripts/onnx/gguf_tensors_equal.py" "$INFO" "$REF/stories260K-f32.gguf" "$TMP/kv-imp.gguf"
check "--kv-cache export passes onnx.checker" $PY -c '
import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' "$TMP/stories260K-f32-kv.onnx"

# --external-data: weights beside the file, read back byte-identical
mkdir -p "$TMP/x" && run "$CONV" "$TMP/bin.gguf" "$TMP/x/ext.onnx" --external-data -q
check "--external-data: ext.onnx + ext.onnx.data written" [ "$RC" -eq 0 -a -s "$TMP/x/ext.onnx.data" ]
"$CONV" "$TMP/x/ext.onnx" "$TMP/x/ext.gguf" -q 2>&1
check "--external-data: imports back byte-identical" quiet $PY "$ROOT/scripts/onnx/gguf_tensors_equal.py" "$INFO" "$TMP/bin.gguf" "$TMP/x/ext.gguf"
$ORT "$TMP/x/ext.onnx" --ids "$IDS" >"$TMP/ort_x.json" 2>/dev/null
check "--external-data: onnxruntime loads it, same logits" quiet $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/ort_x.json" "$TMP/ort.json" 0

# --int8 sym|asym: per-channel int8/uint8 matrices through DequantizeLinear (stories-d256)
D=$TMP/stories-d256-f32.onnx
"$BIN/anvil-tokenizer" encode --tokenizer "$REF/stories-d256-f32.gguf" <"$REF/eval-text-small.txt" >"$TMP/eval-ids.txt"
for q in sym asym; do
  run "$CONV" "$REF/stories-d256-f32.gguf" "$TMP/d256-$q.onnx" --int8 $q -q
  check "--int8 $q: export exits 0" [ "$RC" -eq 0 ]
  check "--int8 $q: onnx.checker.check_model(full_check=True) passes" $PY -c '
import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' "$TMP/d256-$q.onnx"
  check "--int8 $q: matrices $([ $q = sym ] && echo int8 || echo uint8) per channel, norms float, 30 DequantizeLinear" $PY -c '
import onnx, sys
from onnx import numpy_helper as nh
m = onnx.load(sys.argv[1]); qt = onnx.TensorProto.INT8 if sys.argv[2] == "sym" else onnx.TensorProto.UINT8
I = {t.name: t for t in m.graph.initializer}
dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
assert len(dq) == 30, len(dq)
for n in dq:
    q, s, z = (I[i] for i in n.input); ax = [a.i for a in n.attribute if a.name == "axis"][0]
    assert q.data_type == qt and z.data_type == qt and s.data_type == onnx.TensorProto.FLOAT
    assert s.dims[0] == z.dims[0] == q.dims[ax] and ax == (0 if q.name == "token_embd.weight" else 1)
    if sys.argv[2] == "sym": assert not nh.to_array(z).any()
assert all(I[k].data_type == onnx.TensorProto.FLOAT for k in I if k.endswith("norm.weight"))' "$TMP/d256-$q.onnx" $q
  S8=$(stat -c %s "$TMP/d256-$q.onnx"); S32=$(stat -c %s "$D")
  check "--int8 $q: file $S8 bytes <= 30 % of the f32 export's $S32" [ $((S8 * 100)) -le $((S32 * 30)) ]
  node "$ROOT/scripts/onnx/ort_top1.js" "$D" "$TMP/d256-$q.onnx" --ids-file "$TMP/eval-ids.txt" --ctx 128 >"$TMP/top1-$q.json" 2>"$TMP/top1-$q.err"
  check "--int8 $q: onnxruntime top-1 agreement with f32 >= 95 % on eval-text-small ($(cat "$TMP/top1-$q.json" "$TMP/top1-$q.err" | head -c 200))" \
    $PY -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["positions"] > 30000 and d["top1"] >= 0.95' "$TMP/top1-$q.json"
  # import: dequantized to f32; checked against onnxruntime at 'basic' (from 'extended' it runs
  # DequantizeLinear->MatMul as MatMulNBits with int8 activations, not the graph's exact math)
  run "$CONV" "$TMP/d256-$q.onnx" "$TMP/d256-$q.gguf" -q
  check "--int8 $q: imports back to GGUF (f32)" [ "$RC" -eq 0 ]
  "$CONV" "$REF/stories-d256-f32.gguf" "$TMP/d256-$q-kv.onnx" --int8 $q --kv-cache -q 2>&1
  "$BIN/anvil-run" "$TMP/d256-$q.gguf" -p "Once upon a time" -n 32 --temp 0 --json -q >"$TMP/d256-$q-run.json" 2>&1
  P=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' "$TMP/d256-$q-run.json")
  $ORT "$TMP/d256-$q-kv.onnx" --ids "$P" --greedy 32 --kv-cache --opt basic >"$TMP/d256-$q-ort.json" 2>/dev/null
  check "--int8 $q --kv-cache: 32 greedy ids in onnxruntime equal anvil run's on the import, logprobs within 1e-4" python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); o = json.load(open(sys.argv[2]))
assert d["ids"] == o["ids"], (d["ids"], o["ids"])
assert max(abs(a - b) for a, b in zip(d["logprobs"], o["logprobs"])) < 1e-4' "$TMP/d256-$q-run.json" "$TMP/d256-$q-ort.json"
done
"$CONV" "$TMP/d256-sym.gguf" "$TMP/d256-sym-rt.onnx" --int8 sym -q 2>&1
check "--int8 sym: ONNX -> GGUF -> ONNX --int8 sym writes the identical file" cmp -s "$TMP/d256-sym.onnx" "$TMP/d256-sym-rt.onnx"
mkdir -p "$TMP/x8" && "$CONV" "$REF/stories-d256-f32.gguf" "$TMP/x8/m.onnx" --int8 asym --external-data -q 2>&1
$ORT "$TMP/x8/m.onnx" --ids "$P" >"$TMP/x8.json" 2>/dev/null && $ORT "$TMP/d256-asym.onnx" --ids "$P" >"$TMP/x8i.json" 2>/dev/null
check "--int8 asym --external-data: onnxruntime loads it, logits equal the inline file's" \
  quiet $PY "$ROOT/scripts/onnx/logits_diff.py" "$TMP/x8.json" "$TMP/x8i.json" 0
"$CONV" "$ONNX" "$TMP/t8.onnx" --int8 sym -q 2>&1
$ORT "$TMP/t8.onnx" --ids "$IDS" >"$TMP/ort_t8.json" 2>/dev/null
check "torch stories260K.onnx -> anvil --int8 sym: onnxruntime argmax equal to the f32 export's at >= 90 % of positions" \
  $PY -c '
import json, sys
a = json.load(open(sys.argv[1]))["logits"]; b = json.load(open(sys.argv[2]))["logits"]
agree = sum(max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__) for x, y in zip(a, b))
assert len(a) == len(b) > 0 and agree >= 0.9 * len(a), (agree, len(a))' "$TMP/ort_t8.json" "$TMP/ort.json"
$PY "$ROOT/scripts/onnx/mutate.py" "$D" "$TMP/tie.onnx" tie && "$CONV" "$TMP/tie.onnx" "$TMP/tie.gguf" -q 2>&1 &&
  "$CONV" "$TMP/tie.gguf" "$TMP/tie8.onnx" --int8 sym -q 2>&1 && "$CONV" "$TMP/tie8.onnx" "$TMP/tie8.gguf" -q 2>&1 &&
  "$CONV" "$TMP/tie8.gguf" "$TMP/tie8f.onnx" -q 2>&1
$ORT "$TMP/tie8.onnx" --ids "$P" --opt basic >"$TMP/tie8.json" 2>/dev/null; $ORT "$TMP/tie8f.onnx" --ids "$P" --opt basic >"$TMP/tie8f.json" 2>/dev/null
check "--int8 tied classifier (Transpose of the embedding's DequantizeLinear): imports back tied, logits within 1e-4" bash -c \
  '! "$0" "$1" | grep -qE "^  output\.weight" && "$2" "$3" "$4" "$5" 1e-4 >/dev/null' "$INFO" "$TMP/tie8.gguf" $PY \
  "$ROOT/scripts/onnx/logits_diff.py" "$TMP/tie8.json" "$TMP/tie8f.json"

# usage errors
expect_fail "--int8 takes sym or asym" "--int8" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.onnx" --int8 int4
expect_fail "--int8 with a non-ONNX output is a usage error" "onnx" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.safetensors" --int8 sym
expect_fail "--opset out of range is a usage error" "--opset" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.onnx" --opset 5
expect_fail "--kv-cache with a non-ONNX output is a usage error" "onnx" 2 "$CONV" "$TMP/bin.gguf" "$TMP/y.gguf" --kv-cache
