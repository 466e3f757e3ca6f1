#!/usr/bin/env bash
# bench_eval.sh BIN_DIR — `anvil eval perplexity` vs llama.cpp's llama-perplexity on the same
# model, text and context, in the same run: wall time, tokens evaluated per second, and the PPL
# each prints (they should agree to 0.1 %). Models: stories-d256 F32 and Q4_K_M (anvil quantize,
# byte-identical to llama-quantize's). Text: ../shared/reference/llamacpp/eval-text.txt, ctx 256,
# 2 threads. 2 interleaved rounds, best time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REF=$ROOT/../shared/reference/llamacpp
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$ROOT/../shared/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
mkdir -p "$DIR"
unset OPENBLAS_CORETYPE   # see bench_run.sh: let OpenBLAS pick its kernels
. "$(dirname "$0")/lib/llamacpp.sh"
llamacpp_tool llama-perplexity "$DIR/eval-untar.log"
"$BIN/anvil-quantize" "$REF/stories-d256-f32.gguf" "$DIR/stories-d256-Q4_K_M.gguf" Q4_K_M -q
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
echo
echo "bench_eval: $(date -u '+%Y-%m-%d %H:%M UTC'), eval-text.txt, ctx 256, 2 threads, best of 2"
printf '%-22s %10s %10s %8s | %10s %10s %8s | %6s\n' model "anvil s" "anvil t/s" "PPL" "llama s" "llama t/s" "PPL" ratio
for m in "$REF/stories-d256-f32.gguf" "$DIR/stories-d256-Q4_K_M.gguf"; do
  ba=""; bl=""
  for r in 1 2; do
    t0=$(now); out=$("$BIN/anvil-eval" perplexity "$m" --text "$REF/eval-text.txt" -c 256 -t 2 --json -q); t1=$(now)
    ta=$(calc "$t1 - $t0"); if [ -z "$ba" ] || [ "$(calc "int($ta < $ba)")" = 1 ]; then ba=$ta; fi
    pa=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.4f %d" % (d["ppl"], d["chunks"]))' "$out")
    if [ -n "$PEER" ]; then
      t0=$(now); "$PEER" -m "$m" -f "$REF/eval-text.txt" -c 256 -t 2 >"$DIR/ppl.log" 2>&1; t1=$(now)
      tl=$(calc "$t1 - $t0"); if [ -z "$bl" ] || [ "$(calc "int($tl < $bl)")" = 1 ]; then bl=$tl; fi
      pl=$(grep -oE 'Final estimate: PPL = [0-9.]+' "$DIR/ppl.log" | awk '{print $NF}')
    fi
  done
  set -- $pa
  toks=$(( $2 * 256 ))
  if [ -n "$PEER" ]; then
    printf '%-22s %10.2f %10.0f %8s | %10.2f %10.0f %8s | %6.2f\n' "$(basename "$m" .gguf)" "$ba" \
      "$(calc "$toks / $ba")" "$1" "$bl" "$(calc "$toks / $bl")" "$pl" "$(calc "$bl / $ba")"
  else
    printf '%-22s %10.2f %10.0f %8s | llama-perplexity skipped: %s\n' "$(basename "$m" .gguf)" "$ba" \
      "$(calc "$toks / $ba")" "$1" "$PEER_WHY"
  fi
done
echo "(t/s = chunks x 256 tokens evaluated / wall time incl. load; ratio = llama s / anvil s, > 1: anvil faster)"
