#!/usr/bin/env bash
# anvil convert + anvil info end to end on the real stories260K checkpoint.
. "$(dirname "$0")/lib.bash"
REF=$SHARED/reference/llamacpp/stories260K-f32.gguf

run "$BIN/anvil" convert "$SHARED/models/stories260K.bin" "$TMP/s.gguf" --tokenizer "$SHARED/models/tok512.bin" -q
check "llama2.c -> GGUF exits 0" [ "$RC" -eq 0 ]
check "same size as llama.cpp's converter output" [ "$(stat -c %s "$TMP/s.gguf")" -eq "$(stat -c %s "$REF")" ]
# data section (offset 14176, from anvil info on the reference) is byte-identical
check "tensor data byte-identical to llama.cpp's" cmp -s <(tail -c +14177 "$TMP/s.gguf") <(tail -c +14177 "$REF")
check "no temp file left behind" [ -z "$(ls "$TMP" | grep tmp)" ]

run "$BIN/anvil" info "$TMP/s.gguf"
check "info exits 0" [ "$RC" -eq 0 ]
check "info shows the format" grep -q '^format:   gguf v3' <<<"$OUT"
check "info shows 48 tensors" grep -q '^tensors:  48' <<<"$OUT"
check "info counts parameters" grep -q '^params:   292800 ' <<<"$OUT"
check "info abbreviates the vocabulary" grep -q 'tokenizer.ggml.tokens .*504 more' <<<"$OUT"
run "$BIN/anvil" info --all "$TMP/s.gguf"
check "info --all prints it whole" bash -c '! grep -q "504 more" <<<"$0"' "$OUT"
run "$BIN/anvil" info --json "$TMP/s.gguf"
check "info --json is valid JSON" python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["n_tensors"]==48 and d["metadata"]["llama.block_count"]["value"]==5' <<<"$OUT"

run "$BIN/anvil" info "$SHARED/models/stories260K.bin"
check "info reads llama2.c checkpoints" grep -q '^format:   llama2c' <<<"$OUT"

for t in f16 bf16; do
  run "$BIN/anvil" convert "$TMP/s.gguf" "$TMP/s-$t.gguf" --outtype $t --json
  check "GGUF f32 -> $t exits 0" [ "$RC" -eq 0 ]
  check "  --json summary" python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["output_format"]=="gguf" and d["n_tensors"]==48' <<<"$OUT"
  run "$BIN/anvil" info --json "$TMP/s-$t.gguf"
  check "  matrices are $t, norms stay f32" python3 -c '
import json,sys
d=json.load(sys.stdin); want=sys.argv[1]
for t in d["tensors"]:
    assert t["dtype"]==(want if len(t["shape"])>=2 else "f32"), t' "$t" <<<"$OUT"
done
run "$BIN/anvil" convert "$TMP/s-f16.gguf" "$TMP/back.gguf" --outtype f32 -q
check "f16 -> f32 back exits 0" [ "$RC" -eq 0 ]
check "  f32 file has the original size" [ "$(stat -c %s "$TMP/back.gguf")" -eq "$(stat -c %s "$TMP/s.gguf")" ]

# GGUF <-> safetensors: lossless round trip of metadata and data
run "$BIN/anvil" convert "$TMP/s.gguf" "$TMP/s.safetensors" -q
check "GGUF -> safetensors exits 0" [ "$RC" -eq 0 ]
run "$BIN/anvil" convert "$TMP/s.safetensors" "$TMP/s2.gguf" -q
check "safetensors -> GGUF exits 0" [ "$RC" -eq 0 ]
check "GGUF -> safetensors -> GGUF is byte-identical" cmp -s "$TMP/s.gguf" "$TMP/s2.gguf"
run "$BIN/anvil" info "$TMP/s.safetensors"
check "info reads safetensors" grep -q '^format:   safetensors' <<<"$OUT"
run "$BIN/anvil" info "$SHARED/reference/torch/hf"
check "info reads an HF folder" grep -q '^tensors:  ' <<<"$OUT"
run "$BIN/anvil" info "$SHARED/reference/torch/hf-sharded/model.safetensors.index.json"
check "info reads a sharded index" grep -q '^tensors:  ' <<<"$OUT"
