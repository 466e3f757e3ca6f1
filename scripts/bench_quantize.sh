#!/usr/bin/env bash
# bench_quantize.sh BIN_DIR — `anvil quantize` part of `make bench` (called at the end of scripts/bench.sh).
# Wall time of `anvil quantize` against llama.cpp's `llama-quantize` on stories-d256-f32.gguf
# (13 MiB f32, 39 tensors) for every file type, in the same run, interleaved (anvil, llama-quantize,
# anvil, ...), median of ROUNDS; both with the same thread count (nproc). anvil fsyncs its output
# (OUT.tmp, fsync, rename); llama-quantize does not, so its row is timed with `sync OUT` after it
# (like bench.sh's "llama-quantize + sync"); the raw llama-quantize time is printed too. The last
# column says whether the two output files are byte-identical.
# Results and method: docs/BENCHMARKS.md.
#
# Environment:
#   ANVIL_BENCH_DIR              scratch folder (default /tmp/anvil-bench); outputs removed at exit
#   ANVIL_BENCH_QUANT_ROUNDS     interleaved rounds (default 3)
#   ANVIL_BENCH_QUANT_TYPES      file types (default: all 16)
#   ANVIL_LLAMACPP_ARCHIVE       llama.cpp tools archive (default ../shared/tools/llama.cpp/...)
# Needs: coreutils (sync FILE, sha256sum), awk. Optional: the llama.cpp archive (skipped with a reason).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
ROUNDS=${ANVIL_BENCH_QUANT_ROUNDS:-3}
TYPES=${ANVIL_BENCH_QUANT_TYPES:-"Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K F16 BF16"}
REF=${ANVIL_SHARED_REF:-$ROOT/../shared/reference/llamacpp}
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$ROOT/../shared/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
IN=$REF/stories-d256-f32.gguf
NT=$(nproc)

die() { echo "bench_quantize: $*" >&2; exit 1; }
[ -x "$BIN/anvil-quantize" ] || die "$BIN/anvil-quantize missing (run make)"
[ -f "$IN" ] || die "$IN missing"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_QUANT_ROUNDS must be a positive integer"
mkdir -p "$DIR"
OUT=$DIR/quant
cleanup() { rm -f "$OUT"-*.gguf "$OUT"-*.gguf.tmp.* "$DIR"/quant-peer.log; }
trap cleanup EXIT
cleanup

. "$(dirname "$0")/lib/llamacpp.sh"
llamacpp_tool llama-quantize "$DIR/quant-peer.log"

now() { echo "${EPOCHREALTIME/,/.}"; }
el() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A TA=() TP=() TPR=() SAME=()

echo
echo "bench_quantize: $IN, $NT threads, median of $ROUNDS interleaved rounds"
cat "$IN" >/dev/null
for ((r = 1; r <= ROUNDS; r++)); do
  for t in $TYPES; do
    rm -f "$OUT-a.gguf" "$OUT-p.gguf"
    sync
    t0=$(now)
    "$BIN/anvil-quantize" "$IN" "$OUT-a.gguf" "$t" -t "$NT" -q || die "anvil quantize $t failed"
    t1=$(now)
    TA[$t]+="$(el "$t0" "$t1") "
    if [ -n "$PEER" ]; then
      sync
      t0=$(now)
      "$PEER" "$IN" "$OUT-p.gguf" "$t" "$NT" >"$DIR/quant-peer.log" 2>&1 || die "llama-quantize $t failed: $(tail -2 "$DIR/quant-peer.log")"
      t1=$(now)
      sync "$OUT-p.gguf"
      t2=$(now)
      TPR[$t]+="$(el "$t0" "$t1") "
      TP[$t]+="$(el "$t0" "$t2") "
      if [ "$r" -eq 1 ]; then
        if cmp -s "$OUT-a.gguf" "$OUT-p.gguf"; then SAME[$t]=yes; else SAME[$t]=NO; fi
      fi
    fi
  done
done

printf '%-8s %9s %16s %11s %8s %10s\n' type "anvil s" "llama.cpp+sync s" "llama.cpp s" ratio identical
for t in $TYPES; do
  a=$(median <<<"${TA[$t]}")
  if [ -n "$PEER" ]; then
    p=$(median <<<"${TP[$t]}")
    pr=$(median <<<"${TPR[$t]}")
    awk -v t="$t" -v a="$a" -v p="$p" -v pr="$pr" -v s="${SAME[$t]}" 'BEGIN {
      printf "%-8s %9.3f %16.3f %11.3f %7.2fx %10s\n", t, a, p, pr, p / a, s }'
  else
    awk -v t="$t" -v a="$a" 'BEGIN { printf "%-8s %9.3f %16s %11s %8s %10s\n", t, a, "-", "-", "-", "-" }'
  fi
done
if [ -n "$PEER" ]; then
  echo "(ratio = llama-quantize + sync / anvil quantize, > 1 means anvil is faster; identical = output files byte for byte)"
else
  echo "peer: skipped: $PEER_WHY"
fi
