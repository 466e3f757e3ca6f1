#!/usr/bin/env bash
# anvil tokenizer: CLI behaviour; exactness of every vocabulary is in the Criterion suites.
. "$(dirname "$0")/lib.bash"
V=$SHARED/vocab

run "$BIN/anvil" tokenizer --help
check "tokenizer --help exits 0" [ "$RC" -eq 0 ]
run "$BIN/anvil" tokenizer
check "tokenizer without a command exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" tokenizer encode < /dev/null
check "encode without --tokenizer exits 2" [ "$RC" -eq 2 ]
expect_fail "unknown tokenizer file names it" "/nonexistent/tok.gguf" 1 "$BIN/anvil" tokenizer encode --tokenizer /nonexistent/tok.gguf
printf 'not a tokenizer' > "$TMP/junk.gguf"
expect_fail "malformed tokenizer file names it" "$TMP/junk.gguf" 1 "$BIN/anvil" tokenizer encode --tokenizer "$TMP/junk.gguf"

# " Hello world" with llama-spm: ids from llama.cpp's own suite (ggml-vocab-llama-spm.gguf.inp/.out)
in=$(awk 'BEGIN{RS="\n__ggml_vocab_test__\n"} NR==1{printf "%s", $0}' "$V/ggml-vocab-llama-spm.gguf.inp")
want=$(sed -n 1p "$V/ggml-vocab-llama-spm.gguf.out" | sed 's/^ *//')
got=$(printf '%s' "$in" | "$BIN/anvil" tokenizer encode --tokenizer "$V/ggml-vocab-llama-spm.gguf")
check "encode first llama-spm case equals llama.cpp ($want)" [ "$got" = "$want" ]
back=$(printf '%s' "$got" | "$BIN/anvil" tokenizer decode --tokenizer "$V/ggml-vocab-llama-spm.gguf")
check "decode gives the text back" [ "$back" = "$in" ]

run bash -c "printf 'Hello world' | '$BIN/anvil' tokenizer encode --json --tokenizer '$V/ggml-vocab-gpt-2.gguf'"
check "encode --json has ids and tokens" python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ids"]==[15496,995] and d["tokens"]==["Hello","\u0120world"], d' <<<"$OUT"

run bash -c "echo '1 2 99999999' | '$BIN/anvil' tokenizer decode --tokenizer '$V/ggml-vocab-gpt-2.gguf'"
check "decode of an out-of-range id exits 1" [ "$RC" -eq 1 ]
check "  and names the id" grep -q '99999999' <<<"$ERR"
run bash -c "echo '1 x 2' | '$BIN/anvil' tokenizer decode --tokenizer '$V/ggml-vocab-gpt-2.gguf'"
check "decode of a non-number exits 1" [ "$RC" -eq 1 ]

# llama2.c tokenizer.bin and the same vocabulary inside a converted GGUF agree
"$BIN/anvil" convert "$SHARED/models/stories260K.bin" "$TMP/s.gguf" --tokenizer "$SHARED/models/tok512.bin" -q
a=$(head -c 3000 "$SHARED/data/tinystories-sample.txt" | "$BIN/anvil" tokenizer encode --tokenizer "$SHARED/models/tok512.bin")
b=$(head -c 3000 "$SHARED/data/tinystories-sample.txt" | "$BIN/anvil" tokenizer encode --tokenizer "$TMP/s.gguf")
check "tokenizer.bin and converted GGUF give the same ids" [ -n "$a" ] && [ "$a" = "$b" ]

# tiktoken rank file
got=$(printf 'hello world' | "$BIN/anvil" tokenizer encode --tokenizer "$V/tiktoken/cl100k_base.tiktoken")
check "cl100k_base 'hello world' = 15339 1917 (tiktoken)" [ "$got" = "15339 1917" ]

# training: tokenizer.json out, then encode with it
head -c 200000 "$SHARED/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
run "$BIN/anvil" tokenizer train "$TMP/corpus.txt" --vocab-size 400 --special '<|endoftext|>' -o "$TMP/tok.json" -q
check "train exits 0" [ "$RC" -eq 0 ]
check "  writes tokenizer.json" python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["model"]["type"]=="BPE" and len(d["model"]["vocab"])==400' "$TMP/tok.json"
ids=$(printf 'First Citizen:' | "$BIN/anvil" tokenizer encode --tokenizer "$TMP/tok.json")
back=$(printf '%s' "$ids" | "$BIN/anvil" tokenizer decode --tokenizer "$TMP/tok.json")
check "  trained tokenizer round-trips text" [ "$back" = "First Citizen:" ]
run "$BIN/anvil" tokenizer train "$TMP/corpus.txt" --vocab-size 10 -o "$TMP/t2.json" -q
check "train with a vocabulary below 256+specials exits 1" [ "$RC" -eq 1 ]
run "$BIN/anvil" tokenizer train "$TMP/corpus.txt" --vocab-size abc -o "$TMP/t2.json"
check "train with a bad --vocab-size exits 2" [ "$RC" -eq 2 ]
