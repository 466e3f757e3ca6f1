#!/usr/bin/env bash
# bench.sh BIN_DIR — `make bench`: f32->f16 / f32->bf16 conversion throughput of a
# synthetic >= 512 MB GGUF against `cp` of the same file in the same run, the peer
# (llama.cpp's llama-quantize) when its prebuilt tools are available, and
# `anvil info` latency plus a check that info does not read tensor data.
# Results and method: docs/BENCHMARKS.md.
#
# Environment:
#   ANVIL_BENCH_DIR   cache + scratch folder (default /tmp/anvil-bench); the synthetic
#                     input is kept there between runs, outputs are removed at exit
#   ANVIL_BENCH_REPS  rounds (default 5); every round runs every operation once, so
#                     host noise hits them alike; tables show the median and the best
#   ANVIL_LLAMACPP_ARCHIVE   llama.cpp tools archive (default ../shared/tools/llama.cpp/...)
#
# Builds in ANVIL_BENCH_DIR: scripts/bench/mkgguf.c (the input) and scripts/bench/nofsync.c
# (an LD_PRELOAD shim for one diagnostic row: anvil convert with fsync stubbed out).
# Needs: cc, coreutils (cp, sync FILE, dd, df), awk. Optional: fincore, /usr/bin/time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REPS=${ANVIL_BENCH_REPS:-5}
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$ROOT/../shared/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp

# the core library the tools in BIN were linked with
case "$BIN" in
  */build-san/bin) LIB=$ROOT/build-san/libanvil.a ;;
  *) LIB=$ROOT/build/libanvil.a ;;
esac

die() { echo "bench: $*" >&2; exit 1; }
for t in anvil-convert anvil-info; do [ -x "$BIN/$t" ] || die "$BIN/$t missing (run make)"; done
[ -f "$LIB" ] || die "$LIB missing (run make)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_REPS must be a positive integer"

mkdir -p "$DIR"
GEN=1 # bump when mkgguf's output changes
BIG=$DIR/synth-llama-f32-v$GEN.gguf
OUT=$DIR/out

cleanup() { rm -f "$OUT"-*.gguf "$OUT"-*.gguf.tmp.* "$DIR"/peer.log; }
trap cleanup EXIT
cleanup

# ---- disk: the input (0.6 GB, unless cached) plus one output at a time (<= 0.6 GB) ----
need_kb=$((2 * 1024 * 1024))
free_kb=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
[ "$free_kb" -ge "$need_kb" ] || die "$DIR: $((free_kb / 1024)) MiB free, need 2048 MiB"

# ---- synthetic input: built once by scripts/bench/mkgguf.c, kept in the cache ----
MK=$DIR/mkgguf
if [ ! -x "$MK" ] || [ "$ROOT/scripts/bench/mkgguf.c" -nt "$MK" ] || [ "$LIB" -nt "$MK" ]; then
  ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -I"$ROOT/core" \
    "$ROOT/scripts/bench/mkgguf.c" "$LIB" $(sed -n 's/^LDLIBS *:= *//p' "$ROOT/Makefile") -o "$MK.tmp"
  mv "$MK.tmp" "$MK"
fi
NOFSYNC=$DIR/nofsync.so
if [ ! -f "$NOFSYNC" ] || [ "$ROOT/scripts/bench/nofsync.c" -nt "$NOFSYNC" ]; then
  ${CC:-cc} -O2 -shared -fPIC -Wall -Wextra -Werror "$ROOT/scripts/bench/nofsync.c" -o "$NOFSYNC.tmp"
  mv "$NOFSYNC.tmp" "$NOFSYNC"
fi
if [ ! -f "$BIG" ] || ! "$BIN/anvil-info" "$BIG" >/dev/null 2>&1; then
  echo "bench: writing synthetic input $BIG"
  "$MK" "$BIG" 2
fi
IN_BYTES=$(stat -c %s "$BIG")
[ "$IN_BYTES" -ge 512000000 ] || die "$BIG is only $IN_BYTES bytes"

# ---- peer: llama.cpp's llama-quantize (the only GGUF->GGUF f32->f16 tool it has) ----
. "$(dirname "$0")/lib/llamacpp.sh"
llamacpp_tool llama-quantize "$DIR/peer.log"
if [ -n "$PEER" ] && ! "$PEER" "$BIG" "$OUT-peer.gguf" F16 2 >"$DIR/peer.log" 2>&1; then
  PEER_WHY="llama-quantize refused the synthetic file: $(grep -iE 'error|fail|exception' "$DIR/peer.log" | head -3 | tr '\n' ' ')"
  PEER=""
fi
rm -f "$OUT-peer.gguf"

# ---- timing ----
now() { echo "${EPOCHREALTIME/,/.}"; }
declare -A TIMES=() OUTSZ=()
OPS=()
op() { OPS+=("$1"); eval "cmd_$2() { $3; }"; OPNAME["$1"]=$2; OPOUT["$1"]=$4; }
declare -A OPNAME=() OPOUT=()
op "cp"                       cp        "cp '$BIG' '$OUT-cp.gguf'"                                         "$OUT-cp.gguf"
op "cp + sync FILE"           cpsync    "cp '$BIG' '$OUT-cps.gguf' && sync '$OUT-cps.gguf'"                 "$OUT-cps.gguf"
op "anvil convert f16"        af16      "'$BIN/anvil-convert' '$BIG' '$OUT-f16.gguf' --outtype f16 -q"     "$OUT-f16.gguf"
op "anvil convert bf16"       abf16     "'$BIN/anvil-convert' '$BIG' '$OUT-bf16.gguf' --outtype bf16 -q"   "$OUT-bf16.gguf"
# diagnostics: the same conversion on one thread, and with OpenMP workers sleeping instead of spinning between chunks
op "anvil f16, 1 thread"      af16t1    "OMP_NUM_THREADS=1 '$BIN/anvil-convert' '$BIG' '$OUT-f16t1.gguf' --outtype f16 -q" "$OUT-f16t1.gguf"
# like plain cp: output left in the page cache (fsync stubbed out by scripts/bench/nofsync.c)
op "anvil f16, no fsync"      af16nf    "LD_PRELOAD='$NOFSYNC' '$BIN/anvil-convert' '$BIG' '$OUT-f16nf.gguf' --outtype f16 -q" "$OUT-f16nf.gguf"
op "anvil f16, passive wait"  af16pw    "OMP_WAIT_POLICY=passive '$BIN/anvil-convert' '$BIG' '$OUT-f16pw.gguf' --outtype f16 -q" "$OUT-f16pw.gguf"
if [ -n "$PEER" ]; then
  op "llama-quantize F16 + sync"  pf16  "'$PEER' '$BIG' '$OUT-pf16.gguf' F16 2 >'$DIR/peer.log' 2>&1 && sync '$OUT-pf16.gguf'"   "$OUT-pf16.gguf"
  op "llama-quantize BF16 + sync" pbf16 "'$PEER' '$BIG' '$OUT-pbf16.gguf' BF16 2 >'$DIR/peer.log' 2>&1 && sync '$OUT-pbf16.gguf'" "$OUT-pbf16.gguf"
fi

echo "bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $REPS rounds"
echo "bench: input $BIG: $IN_BYTES bytes ($(awk -v b="$IN_BYTES" 'BEGIN { printf "%.1f MiB", b / 1048576 }'), f32, 20 tensors)"
cat "$BIG" >/dev/null # the input is read from the page cache by every operation
sync

for ((r = 1; r <= REPS; r++)); do
  for name in "${OPS[@]}"; do
    f=${OPOUT[$name]}
    rm -f "$f"
    sync # settle earlier writeback outside the timed region
    t0=$(now)
    "cmd_${OPNAME[$name]}" || die "$name failed (round $r)"
    t1=$(now)
    TIMES[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }') "
    if [ "$r" -eq 1 ]; then
      OUTSZ[$name]=$(stat -c %s "$f")
      "$BIN/anvil-info" "$f" >/dev/null || die "anvil info cannot read the output of '$name'"
    fi
    rm -f "$f"
  done
done
sync

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
best() { tr ' ' '\n' | awk 'NF' | sort -g | head -1; }
declare -A MED=()
for name in "${OPS[@]}"; do MED[$name]=$(median <<<"${TIMES[$name]}"); done
CP=${MED[cp]}
CPS=${MED["cp + sync FILE"]}

echo
printf '%-28s %9s %7s %7s %7s %11s %8s %7s\n' operation "median s" "best" "worst" "GB/s" "vs cp+sync" "vs cp" "out/in"
for name in "${OPS[@]}"; do
  m=${MED[$name]}
  b=$(best <<<"${TIMES[$name]}")
  w=$(tr ' ' '\n' <<<"${TIMES[$name]}" | awk 'NF' | sort -g | tail -1)
  awk -v n="$name" -v m="$m" -v b="$b" -v w="$w" -v in_b="$IN_BYTES" -v cps="$CPS" -v cp="$CP" -v o="${OUTSZ[$name]}" 'BEGIN {
    printf "%-28s %9.3f %7.3f %7.3f %7.2f %10.2fx %7.2fx %7.3f\n", n, m, b, w, in_b / m / 1e9, cps / m, cp / m, o / in_b }'
done
echo "(GB/s = input bytes / median wall time, 1 GB = 1e9 B; ratios > 1 mean faster than the reference)"
echo "(anvil convert fsyncs its output and folder; 'cp + sync FILE' and llama-quantize + sync pay the same flush)"
echo

ratio_line() { # label op peer_op
  local m=${MED[$2]}
  awk -v l="$1" -v m="$m" -v in_b="$IN_BYTES" -v cps="$CPS" -v cp="$CP" -v p="${3:+${MED[$3]:-}}" 'BEGIN {
    s = sprintf("%s: %.2f GB/s = %.2fx cp+sync (%.2fx plain cp)", l, in_b / m / 1e9, cps / m, cp / m)
    if (p != "") s = s sprintf(", %.2fx llama-quantize", p / m)
    print s "  [goal >= 0.5x cp: " (cps / m >= 0.5 ? "met" : "NOT met") " vs cp+sync, " (cp / m >= 0.5 ? "met" : "NOT met") " vs plain cp]" }'
}
ratio_line "f32->f16 " "anvil convert f16" "${PEER:+llama-quantize F16 + sync}"
ratio_line "f32->bf16" "anvil convert bf16" "${PEER:+llama-quantize BF16 + sync}"
awk -v m="${MED["anvil f16, no fsync"]}" -v cp="$CP" -v in_b="$IN_BYTES" 'BEGIN {
  printf "f32->f16, fsync stubbed like plain cp: %.2f GB/s = %.2fx plain cp\n", in_b / m / 1e9, cp / m }'
[ -n "$PEER" ] || echo "peer: skipped: $PEER_WHY"

# f16/bf16 outputs: matrices halve, the 1-D norms stay f32 (as llama.cpp does)
for name in "anvil convert f16" "anvil convert bf16"; do
  awk -v n="$name" -v o="${OUTSZ[$name]}" -v i="$IN_BYTES" 'BEGIN {
    r = o / i; if (r < 0.49 || r > 0.51) { printf "bench: %s output is %.3f of the input, expected ~0.5\n", n, r; exit 1 } }' ||
    die "unexpected output size"
done

# ---- anvil info: latency (warm) and proof that it does not read tensor data ----
echo
INFO_T=""
HELP_T=""
for ((r = 1; r <= 2 * REPS; r++)); do
  t0=$(now); "$BIN/anvil-info" "$BIG" >/dev/null; t1=$(now)
  "$BIN/anvil-info" --help >/dev/null; t2=$(now)
  INFO_T+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }') "
  HELP_T+="$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.6f", b - a }') "
done
awk -v m="$(median <<<"$INFO_T")" -v b="$(best <<<"$INFO_T")" -v h="$(median <<<"$HELP_T")" -v cp="$CP" -v n=$((2 * REPS)) 'BEGIN {
  printf "anvil info: %.1f ms median, %.1f ms best over %d runs (warm cache); process start alone (anvil-info --help) %.1f ms;\n", m * 1e3, b * 1e3, n, h * 1e3
  printf "  plain cp of the same file: %.0f ms\n", cp * 1e3 }'

if command -v fincore >/dev/null && [ -x /usr/bin/time ]; then
  dev=$(df -P "$DIR" | awk 'NR == 2 { print $1 }')
  pk=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -1 || true)
  RA_KB=$(cat "/sys/block/${pk:-$(basename "$dev")}/queue/read_ahead_kb" 2>/dev/null || echo 0)
  # page faults of the same binary doing no file work: the baseline to subtract
  base=$(/usr/bin/time -f '%R' "$BIN/anvil-info" --help 2>&1 >/dev/null | tail -1)
  dd if="$BIG" iflag=nocache count=0 status=none # drop the file from the page cache
  before=$(fincore -bn -o RES "$BIG" | tr -d ' ')
  if [ "$before" -gt 1048576 ]; then
    echo "anvil info, cold cache: check skipped ($DIR keeps $before bytes of the file cached after a drop: tmpfs?)"
  else
    t0=$(now)
    st=$(/usr/bin/time -f '%F %R %I' "$BIN/anvil-info" "$BIG" 2>&1 >/dev/null | tail -1)
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
    after=$(fincore -bn -o RES "$BIG" | tr -d ' ')
    read -r major minor fsin <<<"$st"
    awk -v size="$IN_BYTES" -v in_b="$((after - before))" -v major="$major" -v minor="$minor" -v base="$base" \
        -v fsin="$fsin" -v secs="$secs" -v ra="$RA_KB" 'BEGIN {
      printf "anvil info, cold cache: %.1f ms (under /usr/bin/time), %d major + %d minor page faults (%d minor more than `anvil-info --help`);\n",
             secs * 1e3, major, minor, minor - base
      printf "  %.1f of %.1f MiB paged in (block-device reads %.1f MiB); the kernel readahead window is %d KiB\n",
             in_b / 1048576, size / 1048576, fsin * 512 / 1048576, ra
      ok = in_b <= ra * 1024 + 1048576
      print ok ? "  => header only: what was paged in is at most one readahead window around the header, no tensor data read" \
               : "  => anvil info READ TENSOR DATA"
      exit !ok }' || die "anvil info appears to read tensor data"
  fi
else
  echo "anvil info, cold cache: check skipped (needs util-linux fincore and GNU /usr/bin/time)"
fi

# tokenizer training and encode vs HF tokenizers, spm_train, tiktoken (docs/BENCHMARKS.md, issue 4)
bash "$(dirname "$0")/bench_tokenizer.sh" "$BIN"

# anvil run: pp/tg tokens/s vs llama-bench, and the decode memory-bandwidth bound (issue: anvil run)
bash "$(dirname "$0")/bench_run.sh" "$BIN"

# HF folder and PyTorch .pt -> GGUF: wall time and peak RSS vs cp (issue: PyTorch/HF)
bash "$(dirname "$0")/bench_convert_torch.sh" "$BIN"

# anvil quantize vs llama-quantize, every file type (issue: anvil quantize)
bash "$(dirname "$0")/bench_quantize.sh" "$BIN"

# anvil eval perplexity vs llama-perplexity: tokens/s and PPL (issue: quantize/eval)
bash "$(dirname "$0")/bench_eval.sh" "$BIN"

# anvil train --bench vs a PyTorch peer: training tokens/s and MFU (issue: anvil train)
bash "$(dirname "$0")/bench_train.sh" "$BIN"

# anvil train --lora vs a PyTorch LoRA peer; peak RSS on a quantized base (issue: LoRA)
bash "$(dirname "$0")/bench_lora.sh" "$BIN"

# ONNX: export time, onnxruntime tokens/s beside anvil run on the exported model (issue: ONNX)
bash "$(dirname "$0")/bench_onnx.sh" "$BIN"
