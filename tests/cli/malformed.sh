#!/usr/bin/env bash
# Malformed files through the CLI: every case exits 1 with one stderr line that
# names the file, and never crashes (also under SAN=1, where a sanitizer report
# would make the exit code differ).
. "$(dirname "$0")/lib.bash"

G=$SHARED/models/llama-2-tiny-random.gguf
S=$SHARED/reference/torch/hf/model.safetensors
L=$SHARED/models/stories260K.bin

truncations() { # FILE EXT: cut at a spread of points (header, metadata, infos, data)
  local f=$1 ext=$2 size; size=$(stat -c %s "$f")
  for cut in 0 1 3 4 7 8 9 15 16 23 24 31 40 64 100 257 1000 4096 20000 $((size/2)) $((size-1)); do
    [ "$cut" -lt "$size" ] || continue
    head -c "$cut" "$f" > "$TMP/cut$ext"
    expect_fail "$(basename "$f") truncated to $cut bytes" "$TMP/cut$ext" 1 "$BIN/anvil-info" "$TMP/cut$ext"
  done
}
truncations "$G" .gguf
truncations "$S" .safetensors
truncations "$L" .bin

flip() { # FILE OFFSET VALUE EXT: copy FILE to $TMP/flip.EXT (unless it is that file) and set one byte
  [ "$1" -ef "$TMP/flip$4" ] || { cp "$1" "$TMP/flip$4"; chmod u+w "$TMP/flip$4"; }
  printf "$(printf '\\x%02x' "$3")" | dd of="$TMP/flip$4" bs=1 seek="$2" conv=notrunc status=none
}
# GGUF: magic, version, counts, first key length, a type field
flip "$G" 0 0x58 .gguf; expect_fail "GGUF wrong magic" "$TMP/flip.gguf" 1 "$BIN/anvil-info" "$TMP/flip.gguf"
flip "$G" 4 0x09 .gguf; expect_fail "GGUF unknown version" "$TMP/flip.gguf" 1 "$BIN/anvil-info" "$TMP/flip.gguf"
flip "$G" 15 0x7f .gguf; expect_fail "GGUF huge tensor count" "$TMP/flip.gguf" 1 "$BIN/anvil-info" "$TMP/flip.gguf"
flip "$G" 23 0x7f .gguf; expect_fail "GGUF huge metadata count" "$TMP/flip.gguf" 1 "$BIN/anvil-info" "$TMP/flip.gguf"
flip "$G" 31 0x7f .gguf; expect_fail "GGUF huge key length" "$TMP/flip.gguf" 1 "$BIN/anvil-info" "$TMP/flip.gguf"
# safetensors: header length, JSON syntax
flip "$S" 7 0x7f .safetensors; expect_fail "safetensors huge header length" "$TMP/flip.safetensors" 1 "$BIN/anvil-info" "$TMP/flip.safetensors"
flip "$S" 8 0x5b .safetensors; expect_fail "safetensors header not an object" "$TMP/flip.safetensors" 1 "$BIN/anvil-info" "$TMP/flip.safetensors"
flip "$S" 20 0x7d .safetensors; expect_fail "safetensors broken JSON" "$TMP/flip.safetensors" 1 "$BIN/anvil-info" "$TMP/flip.safetensors"
# llama2.c: a zero / absurd header field
flip "$L" 0 0x00 .bin; flip "$TMP/flip.bin" 1 0x00 .bin; expect_fail "llama2.c dim = 0" "$TMP/flip.bin" 1 "$BIN/anvil-info" "$TMP/flip.bin"
flip "$L" 11 0x40 .bin; expect_fail "llama2.c huge n_layers" "$TMP/flip.bin" 1 "$BIN/anvil-info" "$TMP/flip.bin"

# every header byte of the GGUF flipped in turn: exit 0 or 1 only, never a crash
bad=0
for off in $(seq 0 2 200); do
  flip "$G" "$off" 0xff .gguf
  "$BIN/anvil-info" "$TMP/flip.gguf" >/dev/null 2>"$TMP/err"; rc=$?
  if [ $rc -ne 0 ] && { [ $rc -ne 1 ] || [ "$(grep -c '' "$TMP/err")" -ne 1 ]; }; then bad=$((bad+1)); echo "# offset $off: rc=$rc $(head -c 200 "$TMP/err")"; fi
done
check "GGUF bytes 0..200 set to 0xff: clean exit every time" [ $bad -eq 0 ]

# convert on a malformed input writes nothing
head -c 5000 "$G" > "$TMP/cut.gguf"
expect_fail "convert of a truncated GGUF fails naming it" "$TMP/cut.gguf" 1 "$BIN/anvil" convert "$TMP/cut.gguf" "$TMP/out.gguf"
check "  and leaves no output or temp file" [ -z "$(ls "$TMP" | grep '^out')" ]
