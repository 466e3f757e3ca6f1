#!/usr/bin/env bash
# Dispatcher, --help on every tool, usage errors, exit codes.
. "$(dirname "$0")/lib.bash"

run "$BIN/anvil" --help
check "anvil --help exits 0" [ "$RC" -eq 0 ]
for t in convert info tokenizer train quantize eval run; do
  check "anvil --help lists $t" grep -q "^  $t " <<<"$OUT"
done
run "$BIN/anvil"
check "anvil without a tool exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" frobnicate
check "unknown tool exits 2" [ "$RC" -eq 2 ]
check "unknown tool is named" grep -q "unknown tool 'frobnicate'" <<<"$ERR"

for t in convert info; do
  run "$BIN/anvil" $t --help
  check "anvil $t --help exits 0" [ "$RC" -eq 0 ]
  check "anvil $t --help prints usage" grep -q "^usage: anvil $t" <<<"$OUT"
  run "$BIN/anvil-$t" --bogus-flag
  check "anvil-$t unknown flag exits 2" [ "$RC" -eq 2 ]
  run "$BIN/anvil-$t"
  check "anvil-$t without arguments exits 2" [ "$RC" -eq 2 ]
done

run "$BIN/anvil" convert a.gguf b.xyz
check "convert: unknown output extension exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" convert a.gguf b.gguf --outtype q9
check "convert: bad --outtype exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" convert a.gguf b.gguf --outtype
check "convert: --outtype without value exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" convert "$SHARED/models/stories260K.bin" "$TMP/x.gguf"
check "convert: llama2.c to GGUF without --tokenizer exits 2" [ "$RC" -eq 2 ]
check "  ... and says to pass --tokenizer" grep -q -- "--tokenizer" <<<"$ERR"
expect_fail "convert: missing input names the file" "/nonexistent/m.gguf" 1 "$BIN/anvil" convert /nonexistent/m.gguf "$TMP/y.gguf"
check "convert: failed run leaves no output" [ ! -e "$TMP/y.gguf" ]
expect_fail "info: missing input names the file" "/nonexistent/m.gguf" 1 "$BIN/anvil" info /nonexistent/m.gguf
