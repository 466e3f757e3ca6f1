#!/usr/bin/env bash
# anvil quantize: every file type against llama-quantize's recorded outputs
# (../shared/reference/llamacpp: quant-hashes.json per-tensor sha256,
# quant-meta.json whole-file sha256 and fallback warnings,
# quant-hashes-imatrix.json). Outputs are parsed with
# scripts/fixtures/gguf_hashes.py (stdlib GGUF reader, not anvil's code).
#
# Whole-file identity: every output file is byte-identical to llama-quantize's
# (same tensor order, metadata keys and order, padding). The imatrix runs are
# identical when run as llama-quantize was (from the reference folder with the
# relative path "imatrix-d256.gguf"), since the path is stored in
# quantize.imatrix.file.
. "$(dirname "$0")/lib.bash"
Q="$BIN/anvil-quantize"
REF=$SHARED/reference/llamacpp
HASHES=$(cd "$(dirname "$0")/../../scripts/fixtures" && pwd)/gguf_hashes.py
D256=$REF/stories-d256-f32.gguf
S260=$REF/stories260K-f32.gguf
TYPES="Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K F16 BF16"

# cmp_ref OUT.gguf MODEL TYPE META_KEY HASHES.json [JSON]: prints "tensors ok", "file ok",
# "fallbacks ok", "json ok" for what holds (and the first difference otherwise)
cat >"$TMP/cmp.py" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import gguf_hashes
out, model, typ, meta_key, hashes = sys.argv[2:7]
js = json.loads(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[7] else None
g = gguf_hashes.read(out)
want = json.load(open(hashes))[model][typ]
meta = json.load(open(sys.argv[8] if len(sys.argv) > 8 else hashes.replace(hashes.split("/")[-1], "quant-meta.json")))
meta = meta[meta_key][typ]
if list(want) == g["tensor_order"] and all(g["tensors"][k] == v for k, v in want.items()):
    print("tensors ok")
else:
    bad = [k for k in want if g["tensors"].get(k) != want[k]]
    print("tensors differ:", bad[:3] or "order", [g["tensors"].get(k) for k in bad[:1]], [want[k] for k in bad[:1]])
print("file ok" if (g["file_sha256"], g["file_size"]) == (meta["file_sha256"], meta["file_size"])
      else f"file differs: {g['file_size']} vs {meta['file_size']}")
if js is not None:
    fb = [w for w in meta["fallback_warnings"] if w.startswith("warning:")]
    print("fallbacks ok" if js["fallbacks"] == fb and js["n_fallback"] == len(fb) else f"fallbacks differ: {js['fallbacks'][:1]} vs {fb[:1]}")
    n_el = sum(eval("*".join(map(str, t["shape"]))) for t in g["tensors"].values())
    by = sum(t["n_bytes"] for t in g["tensors"].values())
    ok = (js["output_bytes"] == by and abs(js["size_mib"] - by / 1048576) < 1e-9 and abs(js["bpw"] - by * 8 / n_el) < 1e-9
          and [t["name"] for t in js["tensors"]] == g["tensor_order"]
          and all(t["bytes"] == g["tensors"][t["name"]]["n_bytes"] and t["type"].upper() == g["tensors"][t["name"]]["ggml_type"]
                  and t["shape"][::-1] == g["tensors"][t["name"]]["shape"] for t in js["tensors"]))
    print("json ok" if ok else "json differs")
EOF
cmp_ref() { python3 "$TMP/cmp.py" "$(dirname "$HASHES")" "$@" 2>&1; }
# has LINE: the comparison printed LINE (otherwise show what it printed, as a TAP comment)
has() { grep -qx "$1" <<<"$R" || { sed 's/^/# /' <<<"$R"; false; }; }

# ---- stories-d256: every type, no fallback ----
for t in $TYPES; do
  rm -f "$TMP/o.gguf"
  if [ "$t" = Q4_K_M ] || [ "$t" = Q8_0 ]; then run "$Q" "$D256" "$TMP/o.gguf" "$t" --json; J=$OUT
  else run "$Q" "$D256" "$TMP/o.gguf" "$t" -q; J=""; fi
  if [ "$RC" -ne 0 ]; then notok "d256 $t: exit $RC: $ERR"; continue; fi
  R=$(cmp_ref "$TMP/o.gguf" stories-d256 "$t" stories-d256 "$REF/quant-hashes.json" "$J")
  check "d256 $t: every tensor's type, shape and data = llama-quantize's" has "tensors ok"
  check "d256 $t: whole file sha256 = llama-quantize's" has "file ok"
  [ -n "$J" ] && check "d256 $t --json: per-tensor name/type/shape/bytes, size MiB and bpw match the file" has "json ok"
done
check "-q prints nothing" test -z "$OUT$ERR"

# thread count does not change the bytes
run "$Q" "$D256" "$TMP/t1.gguf" Q4_K_M -t 1 -q
R=$(cmp_ref "$TMP/t1.gguf" stories-d256 Q4_K_M stories-d256 "$REF/quant-hashes.json")
check "-t 1: the same file (= llama-quantize's Q4_K_M) as with all threads" has "file ok"

# text output: a per-tensor table and the sizes
run "$Q" "$D256" "$TMP/o.gguf" Q4_K_M
check "table: 39 tensor rows, output.weight q6_K, norms kept f32, final size and bpw as llama-quantize prints them" python3 -c '
import re, sys
out = sys.argv[1]
rows = [l for l in out.splitlines() if re.match(r"^ *\d+  ", l)]
assert len(rows) == 39, len(rows)
assert re.search(r"output\.weight +\[512, 256\] +f32 +q6_K +107520", out), out[:400]
assert re.search(r"output_norm\.weight +\[256\] +f32 +f32 +1024 +kept", out)
assert re.search(r"quant size: +1\.98 MiB \(4\.88 bpw\)", out), out[-300:]' "$OUT"

# ---- stories260K: the K mixes fall back per tensor; legacy types are refused ----
for t in Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K F16 BF16; do
  run "$Q" "$S260" "$TMP/s.gguf" "$t" --json
  if [ "$RC" -ne 0 ]; then notok "260K $t: exit $RC: $ERR"; continue; fi
  R=$(cmp_ref "$TMP/s.gguf" stories260K "$t" stories260K "$REF/quant-hashes.json" "$OUT")
  check "260K $t: tensors (with llama-quantize's fallback types) and whole file = llama-quantize's" \
    bash -c 'grep -qx "tensors ok" <<<"$0" && grep -qx "file ok" <<<"$0" || { sed "s/^/# /" <<<"$0"; false; }' "$R"
  check "260K $t: fallback warnings = llama-quantize's, word for word" has "fallbacks ok"
done
for t in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1; do
  lt=$(tr 'A-Z' 'a-z' <<<"$t")
  rm -f "$TMP/r.gguf"*
  run "$Q" "$S260" "$TMP/r.gguf" "$t"
  check "260K $t refused as llama-quantize does: exit 1, one line naming blk.0.ffn_down.weight, no output" \
    bash -c '[ "$0" -eq 1 ] && [ "$(grep -c "" <<<"$1")" -eq 1 ] && grep -q "blk.0.ffn_down.weight" <<<"$1" &&
             grep -q "ncols 172 not divisible by 32" <<<"$1" && grep -q "no tensor type fallback is defined for type $2" <<<"$1" &&
             ! ls "$3"* >/dev/null 2>&1' "$RC" "$ERR" "$lt" "$TMP/r.gguf"
done

# ---- imatrix: run where llama-quantize ran (the imatrix path is stored in the file) ----
for t in Q4_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
  (cd "$REF" && "$Q" --imatrix imatrix-d256.gguf stories-d256-f32.gguf "$TMP/i.gguf" "$t" -q) 2>"$TMP/i.err"
  R=$(cmp_ref "$TMP/i.gguf" stories-d256 "$t" "stories-d256 --imatrix imatrix-d256.gguf" "$REF/quant-hashes-imatrix.json" "" "$REF/quant-meta.json")
  check "d256 --imatrix $t: every tensor = llama-quantize --imatrix" has "tensors ok"
  check "d256 --imatrix $t: whole file (quantize.imatrix.* keys too) = llama-quantize's" has "file ok"
done
(cd "$REF" && "$Q" --imatrix imatrix-d256.dat stories-d256-f32.gguf "$TMP/idat.gguf" Q4_K_M -q)
R=$(cmp_ref "$TMP/idat.gguf" stories-d256 Q4_K_M "stories-d256 --imatrix imatrix-d256.gguf" "$REF/quant-hashes-imatrix.json" "" "$REF/quant-meta.json")
check "legacy .dat imatrix: same tensors as the GGUF imatrix" has "tensors ok"

# ---- bad input: clear one-line errors, right exit codes, never a partial file ----
echo keep >"$TMP/keep.gguf"
expect_fail "unknown type: exit 2 naming it" "Q9_9" 2 "$Q" "$D256" "$TMP/keep.gguf" Q9_9
expect_fail "missing input: exit 1 naming the file" "nope.gguf" 1 "$Q" "$TMP/nope.gguf" "$TMP/keep.gguf" Q4_0
expect_fail "imatrix of another model (d256 imatrix, 260K model): exit 1 naming the tensor" "blk.0.attn_k.weight" 1 \
  "$Q" "$S260" "$TMP/keep.gguf" Q4_K_M --imatrix "$REF/imatrix-d256.gguf"
check "  and the size mismatch" grep -q "imatrix size 256 is different from tensor size 64" <<<"$ERR"
"$Q" "$D256" "$TMP/q4.gguf" Q4_0 -q
expect_fail "quantized input without --allow-requantize: exit 1" "requantizing from type q6_K is disabled" 1 \
  "$Q" "$TMP/q4.gguf" "$TMP/keep.gguf" Q8_0
run "$Q" "$TMP/q4.gguf" "$TMP/rq.gguf" Q8_0 --allow-requantize -q
check "--allow-requantize: exit 0, all matrices q8_0" python3 -c '
import sys; sys.path.insert(0, sys.argv[2]); import gguf_hashes
g = gguf_hashes.read(sys.argv[1]); assert {t["ggml_type"] for t in g["tensors"].values()} == {"Q8_0", "F32"}' \
  "$TMP/rq.gguf" "$(dirname "$HASHES")"
expect_fail "bad --output-tensor-type: exit 2" "q9_k" 2 "$Q" "$D256" "$TMP/keep.gguf" Q4_0 --output-tensor-type q9_k
expect_fail "missing TYPE: exit 2" "TYPE" 2 "$Q" "$D256" "$TMP/keep.gguf"
check "failed runs left the existing OUT untouched and no temporary files" \
  bash -c '[ "$(cat "$0/keep.gguf")" = keep ] && ! ls "$0"/*.tmp* >/dev/null 2>&1' "$TMP"

# ---- options ----
run "$Q" "$D256" "$TMP/p.gguf" Q4_K_M --pure --output-tensor-type q8_0 --token-embedding-type f16 --json
check "--pure/--output-tensor-type/--token-embedding-type: q4_K everywhere, output q8_0, token_embd f16" python3 -c '
import json, sys
d = {t["name"]: t["type"] for t in json.loads(sys.argv[1])["tensors"]}
assert d["output.weight"] == "q8_0" and d["token_embd.weight"] == "f16", d
assert all(v == "q4_K" for k, v in d.items() if k.endswith(("_q.weight", "_k.weight", "_v.weight", "ffn_down.weight"))), d' "$OUT"
check "--help lists the types" bash -c '"$0" --help | grep -q "Q4_K_M"' "$Q"
check "anvil dispatches to quantize" bash -c '"$0/anvil" quantize --help | grep -q imatrix' "$BIN"

# --int8 sym|asym: per-channel INT8 into safetensors / PyTorch; each weight within half a step
PY=python3
/usr/bin/python3 -c 'import torch' 2>/dev/null && PY=/usr/bin/python3
NPY=python3   # numpy comes from Debian's python3-numpy (scripts/deps.sh)
/usr/bin/python3 -c 'import numpy' 2>/dev/null && NPY=/usr/bin/python3
for mode in sym asym; do
  for ext in safetensors pt; do
    run "$BIN/anvil-quantize" "$D256" "$TMP/i8-$mode.$ext" --int8 $mode -q
    check "--int8 $mode -> .$ext exits 0" test "$RC" -eq 0
  done
  check "--int8 $mode: safetensors dequantizes within half a step of every f32 weight, metadata says $mode" \
    "$NPY" -c '
import json, struct, sys, numpy as np
sys.path.insert(0, sys.argv[3])
from gguf_hashes import read
g = read(sys.argv[2]); gb = open(sys.argv[2], "rb").read()
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
assert h["__metadata__"]["anvil.int8"] == sys.argv[4]
def st(name, dt):
    s, e = h[name]["data_offsets"]; return np.frombuffer(b[base + s:base + e], dtype=dt)
checked = 0
for name, t in g["tensors"].items():
    if len(t["shape"]) != 2: continue
    rows, cols = t["shape"][1], t["shape"][0]
    o = g["data_offsets"][name]
    w = np.frombuffer(gb[o:o + t["n_bytes"]], dtype=np.float32).reshape(rows, cols)
    scale = st(name + ".scale", np.float32).reshape(rows, 1)
    if sys.argv[4] == "sym":
        q = st(name, np.int8).reshape(rows, cols).astype(np.float32); r = q * scale
    else:
        q = st(name, np.uint8).reshape(rows, cols).astype(np.float32)
        r = (q - st(name + ".zero_point", np.uint8).reshape(rows, 1)) * scale
    assert np.all(np.abs(w - r) <= scale * 0.5 + 1e-6), name
    checked += 1
assert checked == 30, checked' "$TMP/i8-$mode.safetensors" "$D256" "$(cd "$(dirname "$0")/../../scripts/fixtures" && pwd)" $mode
done
if "$PY" -c 'import torch' 2>/dev/null; then
  check "--int8 asym .pt: torch.load(weights_only=True) gives uint8 weights + f32 scales + uint8 zero points" "$PY" -c '
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
w = sd["blk.0.attn_q.weight"]
assert w.dtype == torch.uint8 and tuple(w.shape) == (256, 256)
assert sd["blk.0.attn_q.weight.scale"].dtype == torch.float32 and sd["blk.0.attn_q.weight.zero_point"].dtype == torch.uint8
assert len(sd) == 99, len(sd)' "$TMP/i8-asym.pt"
fi
expect_fail "--int8 into a .gguf is a usage error" "gguf" 2 "$BIN/anvil-quantize" "$D256" "$TMP/x.gguf" --int8 sym
expect_fail "--int8 with a bad mode" "bogus" 2 "$BIN/anvil-quantize" "$D256" "$TMP/x.safetensors" --int8 bogus
