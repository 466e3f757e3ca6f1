#!/usr/bin/env bash
# bench_convert_torch.sh BIN_DIR — HF folder / PyTorch part of `make bench` (called at the end of
# scripts/bench.sh). Converts a >= 1 GB synthetic HF folder (f32 model.safetensors, Llama shapes:
# TinyLlama-1.1B widths cut to 5 blocks) to GGUF f16, and a >= 1 GB torch.save .pt of the same model
# to GGUF; wall time and peak RSS (/usr/bin/time -v) against `cp` of the same input bytes in the same
# run. Goals (issue): peak RSS < 20 % of the model size, throughput >= 0.5x cp.
#
# Inputs are made once and cached in ${ANVIL_BENCH_DIR:-/tmp/anvil-bench}: scripts/bench/mkgguf.c
# writes the synthetic GGUF, `anvil convert` turns it into the HF folder (HF names, q/k rows in
# rotate_half layout, config.json) and into the .pt (torch.save zip layout).
# As in bench.sh: the input is read into the page cache first, `sync` runs before every operation
# (outside the timing), anvil fsyncs its output; cp does not, so `cp + sync` is shown too.
#
# Environment: ANVIL_BENCH_DIR, ANVIL_BENCH_TORCH_REPS (rounds, default 3; median wall time, max RSS).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REPS=${ANVIL_BENCH_TORCH_REPS:-3}
LIB=$ROOT/build/libanvil.a
case "$BIN" in */build-san/bin) LIB=$ROOT/build-san/libanvil.a ;; esac
die() { echo "bench_convert_torch: $*" >&2; exit 1; }
[ -x "$BIN/anvil-convert" ] || die "$BIN/anvil-convert missing (run make)"
[ -x /usr/bin/time ] || die "needs GNU /usr/bin/time (apt-get install time)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_TORCH_REPS must be a positive integer"
mkdir -p "$DIR"
need_kb=$((7 * 1024 * 1024))
free_kb=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
[ "$free_kb" -ge "$need_kb" ] || die "$DIR: $((free_kb / 1024)) MiB free, need 7168 MiB"

GEN=1 # bump when the inputs' recipe changes
SRC=$DIR/synth-llama5-f32-v$GEN.gguf
HFDIR=$DIR/synth-hf5-f32-v$GEN
PT=$DIR/synth-llama5-f32-v$GEN.pt
OUT=$DIR/tout
cleanup() { rm -rf "$OUT"-* "$DIR"/tlog.*; }
trap cleanup EXIT
cleanup

MK=$DIR/mkgguf
if [ ! -x "$MK" ] || [ "$ROOT/scripts/bench/mkgguf.c" -nt "$MK" ] || [ "$LIB" -nt "$MK" ]; then
  ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -I"$ROOT/core" \
    "$ROOT/scripts/bench/mkgguf.c" "$LIB" $(sed -n 's/^LDLIBS *:= *//p' "$ROOT/Makefile") -o "$MK.tmp"
  mv "$MK.tmp" "$MK"
fi
if [ ! -f "$SRC" ] || ! "$BIN/anvil-info" "$SRC" >/dev/null 2>&1; then
  echo "bench_convert_torch: writing synthetic GGUF $SRC"
  "$MK" "$SRC" 5
fi
if [ ! -f "$HFDIR/model.safetensors" ]; then
  echo "bench_convert_torch: writing synthetic HF folder $HFDIR"
  rm -rf "$HFDIR"
  "$BIN/anvil-convert" "$SRC" "$HFDIR/" -q
fi
if [ ! -f "$PT" ]; then
  echo "bench_convert_torch: writing synthetic .pt $PT"
  "$BIN/anvil-convert" "$SRC" "$PT" -q
fi
HF_BYTES=$(stat -c %s "$HFDIR/model.safetensors")
PT_BYTES=$(stat -c %s "$PT")
[ "$HF_BYTES" -ge 1000000000 ] && [ "$PT_BYTES" -ge 1000000000 ] || die "inputs are smaller than 1 GB"

# does this build read .pt files (the PyTorch reader is a separate piece of work)?
PT_OK=1
if ! "$BIN/anvil-info" "$PT" >/dev/null 2>"$DIR/tlog.ptcheck"; then
  PT_OK=0
  PT_WHY=$(head -1 "$DIR/tlog.ptcheck")
fi

now() { echo "${EPOCHREALTIME/,/.}"; }
# timed CMD...: prints "wall_s peak_rss_kb"
timed() {
  sync
  local t0 t1
  t0=$(now)
  /usr/bin/time -v -o "$DIR/tlog.time" "$@" >/dev/null 2>"$DIR/tlog.err" || { cat "$DIR/tlog.err" >&2; die "failed: $*"; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v r="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$DIR/tlog.time")" \
    'BEGIN { printf "%.6f %d\n", b - a, r }'
}
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | awk 'NF' | sort -g | tail -1; }

declare -A T=() R=()
add() { read -r w r <<<"$2"; T[$1]+="$w "; R[$1]+="$r "; }
cat "$HFDIR/model.safetensors" "$PT" >/dev/null # inputs in the page cache, as in bench.sh
echo "bench_convert_torch: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $REPS rounds"
for ((i = 1; i <= REPS; i++)); do
  add cp_hf "$(timed cp "$HFDIR/model.safetensors" "$OUT-cp.safetensors")"; rm -f "$OUT-cp.safetensors"
  add cps_hf "$(timed sh -c "cp '$HFDIR/model.safetensors' '$OUT-cp.safetensors' && sync '$OUT-cp.safetensors'")"; rm -f "$OUT-cp.safetensors"
  add hf "$(timed "$BIN/anvil-convert" "$HFDIR" "$OUT-hf.gguf" --outtype f16 -q)"
  [ "$i" -eq 1 ] && { "$BIN/anvil-info" "$OUT-hf.gguf" >/dev/null || die "anvil info cannot read the HF -> GGUF output"; }
  rm -f "$OUT-hf.gguf"
  add cp_pt "$(timed cp "$PT" "$OUT-cp.pt")"; rm -f "$OUT-cp.pt"
  add cps_pt "$(timed sh -c "cp '$PT' '$OUT-cp.pt' && sync '$OUT-cp.pt'")"; rm -f "$OUT-cp.pt"
  if [ "$PT_OK" -eq 1 ]; then
    add pt "$(timed "$BIN/anvil-convert" "$PT" "$OUT-pt.gguf" -q)"
    rm -f "$OUT-pt.gguf"
  fi
done

echo
printf '%-34s %14s %8s %8s %9s %9s %12s %11s %10s\n' case "input bytes" "wall s" "MB/s" "cp MB/s" "vs cp" "vs cp+sync" "peak RSS MB" "RSS % model"
row() { # label key cp_key cps_key bytes
  local w r c cs
  w=$(median <<<"${T[$2]}"); r=$(maxof <<<"${R[$2]}"); c=$(median <<<"${T[$3]}"); cs=$(median <<<"${T[$4]}")
  awk -v l="$1" -v b="$5" -v w="$w" -v r="$r" -v c="$c" -v cs="$cs" 'BEGIN {
    printf "%-34s %14d %8.3f %8.0f %9.0f %8.2fx %9.2fx %12.1f %10.1f%%\n", l, b, w, b / w / 1e6, b / c / 1e6, c / w, cs / w, r / 1024, r * 1024 / b * 100 }'
}
row "HF folder (f32) -> GGUF f16" hf cp_hf cps_hf "$HF_BYTES"
row "  cp model.safetensors" cp_hf cp_hf cps_hf "$HF_BYTES"
if [ "$PT_OK" -eq 1 ]; then
  row ".pt (f32) -> GGUF" pt cp_pt cps_pt "$PT_BYTES"
else
  printf '%-34s %14d   skipped: reader not built (%s)\n' ".pt (f32) -> GGUF" "$PT_BYTES" "$PT_WHY"
fi
row "  cp .pt" cp_pt cp_pt cps_pt "$PT_BYTES"
echo "(median wall time over $REPS rounds, max peak RSS; MB = 1e6 B; anvil fsyncs its output, plain cp does not;"
echo " goals: RSS < 20 % of the model, >= 0.5x cp)"
