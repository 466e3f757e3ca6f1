#!/usr/bin/env bash
# A tokenizer.json trained by anvil loads in HF tokenizers (npm, installed by
# scripts/deps.sh) and gives the same ids as `anvil tokenizer encode`.
. "$(dirname "$0")/lib.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NODE_PATH=${ANVIL_NODE_DIR:-$HOME/.cache/anvil/node}/node_modules
CORPUS=$SHARED/data/tinyshakespeare.txt

if ! node -e 'require("tokenizers")' 2>/dev/null; then
  notok "npm tokenizers not installed in $NODE_PATH (run scripts/deps.sh)"; exit 1
fi
for pat in gpt2 gpt4; do
  run "$BIN/anvil" tokenizer train "$CORPUS" --vocab-size 1000 --pattern $pat --special '<|endoftext|>' -o "$TMP/$pat.json" -q
  check "train ($pat pattern, vocab 1000) exits 0" [ "$RC" -eq 0 ]
  node "$ROOT/scripts/hf_encode.js" "$TMP/$pat.json" "$CORPUS" | tr -d '[]' | tr ',' ' ' > "$TMP/hf.ids"
  check "  HF tokenizers loads it and encodes tinyshakespeare" [ -s "$TMP/hf.ids" ]
  "$BIN/anvil" tokenizer encode --tokenizer "$TMP/$pat.json" < "$CORPUS" > "$TMP/anvil.ids"
  n=$(wc -w < "$TMP/anvil.ids")
  check "  anvil ids ($n tokens) equal HF's" cmp -s <(tr -s ' \n' '\n\n' < "$TMP/hf.ids" | sed '/^$/d') <(tr -s ' \n' '\n\n' < "$TMP/anvil.ids" | sed '/^$/d')
done
