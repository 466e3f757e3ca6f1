#!/usr/bin/env bash
# anvil convert: GGUF -> PyTorch .pt (checked with torch.load(weights_only=True)),
# GGUF <-> HF folder (lossless), HF folder -> GGUF in llama.cpp, and bad inputs.
. "$(dirname "$0")/lib.bash"
REF=$SHARED/reference/llamacpp/stories260K-f32.gguf
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$SHARED/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
# Debian's python3-torch lives in the system interpreter (a pyenv python3 may shadow it)
PY=python3
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import torch, numpy' 2>/dev/null; then PY=$p; break; fi
done

run "$BIN/anvil" convert "$REF" "$TMP/s-f16.gguf" --outtype f16 -q
check "GGUF f32 -> f16 (input for the f16 .pt)" [ "$RC" -eq 0 ]

# a GGUF reader in python (stdlib + numpy): name -> numpy array in PyTorch shape order
cat >"$TMP/gguf.py" <<'EOF'
import struct, numpy as np
def read(path):
    d = open(path, 'rb').read(); o = 4
    ver, nt, nkv = struct.unpack_from('<IQQ', d, o); o += 20
    def s():
        nonlocal o
        n, = struct.unpack_from('<Q', d, o); o += 8; v = d[o:o+n]; o += n; return v.decode()
    sz = {0:1,1:1,2:2,3:2,4:4,5:4,6:4,7:1,10:8,11:8,12:8}
    def val(t):
        nonlocal o
        if t == 8: return s()
        if t == 9:
            et, n = struct.unpack_from('<IQ', d, o); o += 12
            return [val(et) for _ in range(n)]
        o += sz[t]; return None
    align = 32
    for _ in range(nkv):
        k = s(); t, = struct.unpack_from('<I', d, o); o += 4
        if k == 'general.alignment': align = struct.unpack_from('<I', d, o)[0]
        val(t)
    ts = []
    for _ in range(nt):
        name = s(); nd, = struct.unpack_from('<I', d, o); o += 4
        ne = struct.unpack_from('<%dQ' % nd, d, o); o += 8 * nd
        t, off = struct.unpack_from('<IQ', d, o); o += 12
        ts.append((name, ne, t, off))
    base = (o + align - 1) // align * align
    dt = {0: np.float32, 1: np.float16, 30: np.uint16}
    out = {}
    for name, ne, t, off in ts:
        n = int(np.prod(ne)) if ne else 1
        a = np.frombuffer(d, dtype=dt[t], count=n, offset=base + off)
        out[name] = a.reshape(tuple(reversed(ne)))
    return out
EOF

for src in "$REF" "$TMP/s-f16.gguf"; do
  b=$(basename "$src" .gguf)
  run "$BIN/anvil" convert "$src" "$TMP/$b.pt" -q
  check "$b: GGUF -> .pt exits 0" [ "$RC" -eq 0 ]
  check "$b: no temp file left" [ -z "$(ls "$TMP" | grep '\.tmp\.')" ]
  if "$PY" -c 'import torch' 2>/dev/null; then
    run "$PY" - "$TMP/gguf.py" "$src" "$TMP/$b.pt" <<'EOF'
import sys, importlib.util, torch, numpy as np, zipfile
spec = importlib.util.spec_from_file_location('g', sys.argv[1]); g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
ref = g.read(sys.argv[2])
sd = torch.load(sys.argv[3], weights_only=True)
assert list(sd) == list(ref), (list(sd)[:3], list(ref)[:3])
for k, a in ref.items():
    t = sd[k]
    assert tuple(t.shape) == a.shape, (k, t.shape, a.shape)
    want = {np.float32: torch.float32, np.float16: torch.float16}[a.dtype.type]
    assert t.dtype == want, (k, t.dtype)
    assert t.is_contiguous()
    assert np.array_equal(t.numpy().view(np.uint8), np.ascontiguousarray(a).view(np.uint8)), k
z = zipfile.ZipFile(sys.argv[3])
assert z.testzip() is None
import struct
raw = open(sys.argv[3], 'rb').read()
for i in z.infolist():
    nl, xl = struct.unpack_from('<HH', raw, i.header_offset + 26)
    assert i.compress_type == 0 and (i.header_offset + 30 + nl + xl) % 64 == 0, i.filename
print(len(sd))
EOF
    check "$b: torch.load(weights_only=True) gives every tensor bit-equal, zip CRCs ok, 64-byte aligned" [ "$RC" -eq 0 ]
    [ "$RC" -eq 0 ] || echo "# $ERR" | tail -3
  else
    notok "$b: torch.load check: python3-torch is not installed (bash scripts/deps.sh)"
  fi
done

# tied weights: a view shared by two names -> one storage in the .pt (the reference .pt is tied)
if "$PY" -c 'import torch' 2>/dev/null && [ -f "$SHARED/reference/torch/stories260K.pt" ]; then
  run "$BIN/anvil" convert "$SHARED/reference/torch/stories260K.pt" "$TMP/tied.pt" -q
  if [ "$RC" -eq 0 ]; then
    run "$PY" -c '
import sys, torch
a = torch.load(sys.argv[1], weights_only=True); b = torch.load(sys.argv[2], weights_only=True)
assert list(a) == list(b)
for k in a: assert torch.equal(a[k], b[k]), k
assert b["lm_head.weight"].data_ptr() == b["model.embed_tokens.weight"].data_ptr()
' "$SHARED/reference/torch/stories260K.pt" "$TMP/tied.pt"
    check ".pt -> .pt: equal tensors, tied lm_head/embed_tokens share one storage" [ "$RC" -eq 0 ]
  else
    notok ".pt -> .pt (tied storage): $ERR"
  fi
fi

# GGUF -> HF folder -> GGUF
run "$BIN/anvil" convert "$REF" "$TMP/hf/" -q
check "GGUF -> HF folder exits 0" [ "$RC" -eq 0 ]
check "  folder has config.json, model.safetensors, tokenizer.json" \
  bash -c '[ -f "$0/config.json" ] && [ -f "$0/model.safetensors" ] && [ -f "$0/tokenizer.json" ]' "$TMP/hf"
check "  no temp folder left" [ -z "$(ls "$TMP" | grep '\.tmp\.')" ]
check "  config.json is LlamaForCausalLM with the GGUF's hyperparameters" python3 -c '
import json,sys
c=json.load(open(sys.argv[1]))
assert c["architectures"]==["LlamaForCausalLM"] and c["model_type"]=="llama"
want=dict(hidden_size=64,intermediate_size=172,num_hidden_layers=5,num_attention_heads=8,num_key_value_heads=4,
          head_dim=8,vocab_size=512,max_position_embeddings=128,rms_norm_eps=1e-05,bos_token_id=1,eos_token_id=2,
          torch_dtype="float32",tie_word_embeddings=False)
for k,v in want.items(): assert c[k]==v,(k,c[k],v)' "$TMP/hf/config.json"
run "$BIN/anvil" info --json "$TMP/hf"
check "  HF names and HF q/k layout (equal to the PyTorch reference folder)" python3 -c '
import json,sys,struct
def st(p):
    d=open(p,"rb").read(); n=struct.unpack_from("<Q",d)[0]; h=json.loads(d[8:8+n]); b=8+n
    return {k:d[b+v["data_offsets"][0]:b+v["data_offsets"][1]] for k,v in h.items() if k!="__metadata__"}
a=st(sys.argv[1]); r=st(sys.argv[2])
for k,v in r.items(): assert a[k]==v,k
assert set(a)-set(r)=={"lm_head.weight"} and a["lm_head.weight"]==r["model.embed_tokens.weight"]' \
  "$TMP/hf/model.safetensors" "$SHARED/reference/torch/hf/model.safetensors"
run "$BIN/anvil" convert "$TMP/hf" "$TMP/back.gguf" -q
check "HF folder -> GGUF exits 0" [ "$RC" -eq 0 ]
check "GGUF -> HF folder -> GGUF is byte-identical (metadata and tensors)" cmp -s "$REF" "$TMP/back.gguf"
run "$BIN/anvil" convert "$TMP/s-f16.gguf" "$TMP/hf16" --hf-folder -q
run "$BIN/anvil" convert "$TMP/hf16" "$TMP/back16.gguf" -q
check "f16: GGUF -> HF folder -> GGUF is byte-identical" cmp -s "$TMP/s-f16.gguf" "$TMP/back16.gguf"

# HF tokenizers reads the written tokenizer.json and encodes like llama.cpp's SentencePiece
NODE_DIR=${ANVIL_NODE_DIR:-$HOME/.cache/anvil/node}
head -c 4000 "$SHARED/reference/llamacpp/eval-text-small.txt" >"$TMP/text.txt"
if [ -d "$NODE_DIR/node_modules/tokenizers" ] && command -v node >/dev/null; then
  run env NODE_PATH="$NODE_DIR/node_modules" node "$(dirname "$0")/../../scripts/hf_encode.js" "$TMP/hf/tokenizer.json" "$TMP/text.txt"
  HF_IDS=$OUT
  run "$BIN/anvil" tokenizer encode --tokenizer "$REF" <"$TMP/text.txt"
  check "tokenizer.json: HF tokenizers ids == GGUF SentencePiece ids ($(wc -w <<<"$OUT") tokens)" python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=[int(x) for x in sys.argv[2].split()]; assert a==b and len(a)>500' "$HF_IDS" "$OUT"
else
  notok "tokenizer.json check: npm tokenizers not installed in $NODE_DIR (bash scripts/deps.sh)"
fi

# HF folder (PyTorch reference weights + our tokenizer.json) -> GGUF runs in llama.cpp like the reference
mkdir -p "$TMP/pure"
cp "$SHARED/reference/torch/hf/config.json" "$SHARED/reference/torch/hf/model.safetensors" "$TMP/hf/tokenizer.json" "$TMP/pure/"
run "$BIN/anvil" convert "$TMP/pure" "$TMP/pure.gguf" -q
check "reference HF folder -> GGUF exits 0" [ "$RC" -eq 0 ]
if [ ! -x "$LLAMA_DIR/llama-simple" ] && [ -f "$LLAMA_ARCHIVE" ]; then
  mkdir -p "$LLAMA_DIR" && tar xJf "$LLAMA_ARCHIVE" -C "$LLAMA_DIR" 2>/dev/null
fi
if [ -x "$LLAMA_DIR/llama-simple" ]; then
  A=$("$LLAMA_DIR/llama-simple" -m "$TMP/pure.gguf" -n 24 "Once upon a time" 2>/dev/null)
  B=$("$LLAMA_DIR/llama-simple" -m "$REF" -n 24 "Once upon a time" 2>/dev/null)
  check "llama-simple loads the converted HF folder and generates what the reference GGUF does" \
    bash -c '[ -n "$0" ] && [ "$0" = "$1" ]' "$A" "$B"
else
  echo "# SKIP llama-simple check: llama.cpp tools archive not found ($LLAMA_ARCHIVE) — not counted as a pass"
fi
run "$BIN/anvil" convert "$SHARED/reference/torch/hf-sharded" "$TMP/sharded.gguf" --tokenizer "$TMP/hf/tokenizer.json" -q
check "sharded HF folder + --tokenizer tokenizer.json -> GGUF: same tensors as the single-file folder" \
  cmp -s <("$BIN/anvil" info --json "$TMP/sharded.gguf" | python3 -c 'import json,sys; print([ (t["name"],t["shape"]) for t in json.load(sys.stdin)["tensors"]])') \
         <("$BIN/anvil" info --json "$TMP/pure.gguf" | python3 -c 'import json,sys; print([ (t["name"],t["shape"]) for t in json.load(sys.stdin)["tensors"]])')

# bad input: one line, exit 1, nothing left behind
mkdir -p "$TMP/ro" && chmod 555 "$TMP/ro"
if [ "$(id -u)" -ne 0 ]; then
  expect_fail "unwritable output folder -> one-line error" "$TMP/ro/x.pt" 1 "$BIN/anvil" convert "$REF" "$TMP/ro/x.pt" -q
else
  # root ignores mode bits: a folder that does not exist is the unwritable case
  expect_fail "output folder does not exist -> one-line error" "$TMP/nodir/x.pt" 1 "$BIN/anvil" convert "$REF" "$TMP/nodir/x.pt" -q
fi
touch "$TMP/afile"
expect_fail "HF folder requested over an existing file -> one-line error" "$TMP/afile" 1 "$BIN/anvil" convert "$REF" "$TMP/afile" --hf-folder -q
check "  the file is untouched" [ ! -s "$TMP/afile" ]
expect_fail "HF folder into a non-empty folder -> one-line error" "$TMP/hf" 1 "$BIN/anvil" convert "$REF" "$TMP/hf/" -q
# a quantized GGUF (llama.cpp's own quantizer)
if [ -x "$LLAMA_DIR/llama-quantize" ]; then
  # stories260K's 172-wide rows do not split into q8_0 blocks; stories-d256 does
  "$LLAMA_DIR/llama-quantize" "$SHARED/reference/llamacpp/stories-d256-f32.gguf" "$TMP/q8.gguf" Q8_0 >/dev/null 2>&1
fi
if [ -f "$TMP/q8.gguf" ]; then
  expect_fail "quantized GGUF -> .pt -> one-line error" "q8_0" 1 "$BIN/anvil" convert "$TMP/q8.gguf" "$TMP/q8.pt" -q
  check "  no .pt and no temp file left" [ -z "$(ls "$TMP" | grep -E 'q8\.pt')" ]
  expect_fail "quantized GGUF -> HF folder -> one-line error" "q8_0" 1 "$BIN/anvil" convert "$TMP/q8.gguf" "$TMP/q8hf/" -q
  check "  no folder and no temp folder left" [ -z "$(ls "$TMP" | grep -E 'q8hf')" ]
else
  echo "# SKIP quantized GGUF cases: llama-quantize not available"
fi
expect_fail "HF names with a missing --config -> one-line error" "missing.json" 1 "$BIN/anvil" convert "$SHARED/reference/torch/hf/model.safetensors" "$TMP/x.gguf" --config "$TMP/missing.json" -q
check "  no output left" [ ! -e "$TMP/x.gguf" ]
run "$BIN/anvil" convert "$REF" "$TMP/x.bad"
check "unknown output extension -> usage error (exit 2)" [ "$RC" -eq 2 ]
chmod 755 "$TMP/ro"

# hostile checkpoints through the CLI: exit 1, one line naming the file, no output, nothing run
FIX=$(cd "$(dirname "$0")/../fixtures/torch" && pwd)
for h in h_os_system h_eval h_subprocess h_stack_global h_inst h_marks h_zip_bomb h_traversal h_out_of_range; do
  rm -f "$TMP/pwned"
  expect_fail "hostile $h.pt -> GGUF rejected" "$h.pt" 1 "$BIN/anvil-convert" "$FIX/$h.pt" "$TMP/$h.gguf" -q
  check "  $h: no output, no temp file, nothing executed" \
    bash -c '! ls "$0"/'"$h"'.gguf* >/dev/null 2>&1 && [ ! -e "$0/pwned" ]' "$TMP"
done
run "$BIN/anvil-convert" "$FIX/h_os_system.pt" "$TMP/x.gguf" -q
check "  the refused global is named" grep -q "os.system" <<<"$ERR"

# .pt (zip, legacy, f16) -> GGUF -> anvil run: greedy output equals llama.cpp's reference generation
TS=$SHARED/reference/torch
for f in stories260K.pt stories260K-legacy.pt; do
  "$BIN/anvil-convert" "$TS/$f" "$TMP/from-$f.gguf" --config "$TS/hf/config.json" \
    --tokenizer "$SHARED/models/tok512.bin" -q
  run "$BIN/anvil-run" "$TMP/from-$f.gguf" -p "Once upon a time" -n 200 --temp 0 --json -q
  check "$f -> GGUF: greedy ids and text equal llama-simple's (greedy.json)" python3 -c '
import json, sys
d = json.loads(sys.argv[1]); r = json.load(open(sys.argv[2]))[0]
assert r["prompt"] == "Once upon a time" and d["ids"] == r["generated_ids"] and d["text"] == r["output_text"]' \
    "$OUT" "$SHARED/reference/llamacpp/greedy.json"
done
