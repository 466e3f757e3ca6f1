#!/usr/bin/env bash
# anvil train prepare: token shards from text; the tokenizer CLI is the independent count.
. "$(dirname "$0")/lib.bash"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TXT=$REPO/datasets/tinyshakespeare.txt
TOK=$SHARED/models/tok512.bin

run "$BIN/anvil" train --help
check "train --help exits 0" [ "$RC" -eq 0 ]
check "  lists prepare, plot and --resume" bash -c "grep -q prepare <<<\"\$1\" && grep -q plot <<<\"\$1\" && grep -q -- --resume <<<\"\$1\"" _ "$OUT"
run "$BIN/anvil" train
check "train without a command exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train fly
check "train with an unknown command exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --help
check "prepare --help exits 0" [ "$RC" -eq 0 ]

check "bundled tinyshakespeare is the upstream file" bash -c "sha256sum '$TXT' | grep -q ^86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

whole=$("$BIN/anvil" tokenizer encode --tokenizer "$TOK" < "$TXT" | wc -w)
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/ds" --val-fraction 0 -q
check "prepare without validation exits 0" [ "$RC" -eq 0 ]
check "  writes train.bin and meta.json, no val.bin" [ -s "$TMP/ds/train.bin" ] && [ -s "$TMP/ds/meta.json" ] && [ ! -e "$TMP/ds/val.bin" ]
check "  no temp files left" bash -c "[ \$(ls -A '$TMP/ds' | wc -l) -eq 2 ]"
n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train"]["tokens"])' "$TMP/ds/meta.json")
check "  token count = tokenizer encode's ($whole)" [ "$n" = "$whole" ]
check "  header: magic, version 1, vocab 512, u16, n_tokens" python3 -c '
import struct,sys
h=open(sys.argv[1],"rb").read(40)
m,v,voc,tb,ft,n,nf=struct.unpack("<8sIIIIQQ",h)
assert m==b"ANVLTOK1" and v==1 and voc==512 and tb==2 and n==int(sys.argv[2]) and nf==(n+ft-1)//ft, (m,v,voc,tb,ft,n,nf)' "$TMP/ds/train.bin" "$whole"
check "  frames are standard zstd: zstd -d of each gives the u16 ids" python3 -c '
import struct,sys,subprocess
d=open(sys.argv[1],"rb").read()
_,_,voc,tb,ft,n,nf=struct.unpack("<8sIIIIQQ",d[:40])
raw=b""
for i in range(nf):
    off,cs=struct.unpack("<QQ",d[40+16*i:56+16*i])
    raw+=subprocess.run(["zstd","-dc"],input=d[off:off+cs],capture_output=True,check=True).stdout
ids=struct.unpack("<%dH"%n,raw)
want=[int(x) for x in open(sys.argv[2]).read().split()]
assert list(ids)==want' "$TMP/ds/train.bin" <("$BIN/anvil" tokenizer encode --tokenizer "$TOK" < "$TXT")

run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/ds2" --json
check "prepare --val-fraction default (0.1) --json exits 0" [ "$RC" -eq 0 ]
check "  train + val = tokenizer encode; val is ~10%; split at a line start" python3 -c '
import json,sys
j=json.loads(sys.argv[1]); whole=int(sys.argv[2]); txt=open(sys.argv[3],"rb").read()
t=j["train"]["tokens"]; v=j["val"]["tokens"]; off=j["val"]["split"]["offset"]
assert t+v==whole, (t,v,whole)
assert 0.08 < v/whole < 0.12, v/whole
assert txt[off-1:off]==b"\n" and off >= int(len(txt)*0.9)-1
assert j["train"]["text_bytes"]==off and j["val"]["text_bytes"]==len(txt)-off
assert json.load(open(sys.argv[4]))["val"]["tokens"]==v' "$OUT" "$whole" "$TXT" "$TMP/ds2/meta.json"
off=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["val"]["split"]["offset"])' "$OUT")
vt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["train"]["tokens"])' "$OUT")
head_n=$(head -c "$off" "$TXT" | "$BIN/anvil" tokenizer encode --tokenizer "$TOK" | wc -w)
check "  train count = tokenizer encode of the text before the split ($head_n)" [ "$vt" = "$head_n" ]

# --val FILE and --bos: one BOS per document
head -c 300000 "$TXT" > "$TMP/a.txt"; tail -c 50000 "$TXT" > "$TMP/v.txt"
na=$("$BIN/anvil" tokenizer encode --tokenizer "$TOK" < "$TMP/a.txt" | wc -w)
nv=$("$BIN/anvil" tokenizer encode --tokenizer "$TOK" < "$TMP/v.txt" | wc -w)
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TMP/a.txt" "$TMP/a.txt" --val "$TMP/v.txt" --bos -o "$TMP/ds3" --json -t 2 --frame-tokens 1000
check "prepare --val FILE --bos exits 0" [ "$RC" -eq 0 ]
check "  counts: 2 x (1 + $na) train, 1 + $nv val" python3 -c '
import json,sys
j=json.loads(sys.argv[1])
assert j["train"]["tokens"]==2*(1+int(sys.argv[2])) and j["val"]["tokens"]==1+int(sys.argv[3]), j
assert j["frame_tokens"]==1000 and j["bos_per_document"] is True' "$OUT" "$na" "$nv"

# the same vocabulary from the converted GGUF gives the same shard bytes and vocab hash
"$BIN/anvil" convert "$SHARED/models/stories260K.bin" "$TMP/s.gguf" --tokenizer "$TOK" -q
"$BIN/anvil" train prepare --tokenizer "$TMP/s.gguf" "$TXT" -o "$TMP/ds4" --val-fraction 0 -q
check "tokenizer.bin and converted GGUF give identical train.bin" cmp -s "$TMP/ds/train.bin" "$TMP/ds4/train.bin"
check "  and the same vocab_hash" bash -c "[ \"\$(grep vocab_hash '$TMP/ds/meta.json')\" = \"\$(grep vocab_hash '$TMP/ds4/meta.json')\" ]"
"$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/ds5" --val-fraction 0 -q -t 1
check "output does not depend on the thread count" cmp -s "$TMP/ds/train.bin" "$TMP/ds5/train.bin"

# bad inputs
run "$BIN/anvil" train prepare "$TXT" -o "$TMP/x"
check "prepare without --tokenizer exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT"
check "prepare without -o exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" -o "$TMP/x"
check "prepare without TEXT exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/x" --val-fraction 1.5
check "prepare --val-fraction 1.5 exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/x" --val-fraction abc
check "prepare --val-fraction abc exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/x" --val-fraction 0.1 --val "$TMP/v.txt"
check "prepare --val with --val-fraction exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/x" --frame-tokens 0
check "prepare --frame-tokens 0 exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/x" --bogus
check "prepare with an unknown option exits 2" [ "$RC" -eq 2 ]
expect_fail "missing text file is named" "/nonexistent/in.txt" 1 "$BIN/anvil" train prepare --tokenizer "$TOK" /nonexistent/in.txt -o "$TMP/x" -q
check "  and leaves no output" [ ! -e "$TMP/x/train.bin" ]
expect_fail "missing tokenizer is named" "/nonexistent/tok.bin" 1 "$BIN/anvil" train prepare --tokenizer /nonexistent/tok.bin "$TXT" -o "$TMP/x" -q
printf 'junk' > "$TMP/junk.gguf"
expect_fail "malformed tokenizer is named" "$TMP/junk.gguf" 1 "$BIN/anvil" train prepare --tokenizer "$TMP/junk.gguf" "$TXT" -o "$TMP/x" -q
printf 'no newline at all' > "$TMP/one.txt"
expect_fail "a fraction with no line start to split at is an error" "one.txt" 1 "$BIN/anvil" train prepare --tokenizer "$TOK" "$TMP/one.txt" -o "$TMP/x" -q
printf 'x' > "$TMP/file"
expect_fail "-o naming a file is an error" "$TMP/file" 1 "$BIN/anvil" train prepare --tokenizer "$TOK" "$TXT" -o "$TMP/file" -q
