#!/usr/bin/env bash
# bench_run.sh BIN_DIR — `anvil run` part of `make bench` (called at the end of scripts/bench.sh).
# Prompt processing (pp128: 128 random tokens as one batch from position 0) and generation (tg128: 128
# single-token steps from position 0) tokens/s, measured like llama-bench -p 128 -n 128 -r REPS, for
# stories260K (f32), stories-d256 (f32) and stories-d256 converted to f16 by `anvil convert --outtype f16`,
# at 1 and 2 threads. In the same run, interleaved with anvil (anvil, llama-bench, anvil, llama-bench, ...):
# llama.cpp's llama-bench on the same files with the same threads. Each cell is the median over ROUNDS
# rounds of the mean of REPS repetitions (after one warm-up run, as llama-bench does).
# Beside generation: the memory-bandwidth bound — bytes of weights read per decoded token (anvil's
# llm weight_bytes: every matrix, the norms, the output matrix and one embedding row) against memcpy
# bandwidth (scripts/bench/membw.c, same thread count) on a buffer of that size, which stays hot in
# cache between tokens exactly as the weights do; memcpy of 1 GiB (DRAM) is printed for reference.
# Results and method: docs/BENCHMARKS.md.
#
# Environment:
#   ANVIL_BENCH_DIR              cache + scratch folder (default /tmp/anvil-bench): membw, the f16 model
#   ANVIL_BENCH_RUN_REPS         repetitions per measurement (default 5, as llama-bench -r 5)
#   ANVIL_BENCH_RUN_ROUNDS       interleaved rounds (default 3)
#   ANVIL_BENCH_RUN_QUANTS       quantized d256 variants to add (default "Q8_0 Q6_K Q4_K_M Q4_0")
#   ANVIL_LLAMACPP_ARCHIVE       llama.cpp tools archive (default ../shared/tools/llama.cpp/...)
#   ANVIL_BENCH_BLAS_CORE        OPENBLAS_CORETYPE for anvil's prompt sgemms (default: unset, so
#                                OpenBLAS picks its kernels for the CPU — Cooperlake/AVX-512 on Zen 4;
#                                this machine's environment forces Haswell, ~1.5x slower pp)
# Needs: cc, python3. Optional: the llama.cpp archive (skipped with a printed reason when absent).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REPS=${ANVIL_BENCH_RUN_REPS:-5}
ROUNDS=${ANVIL_BENCH_RUN_ROUNDS:-3}
REF=${ANVIL_SHARED_REF:-$ROOT/../shared/reference/llamacpp}
LLAMA_ARCHIVE=${ANVIL_LLAMACPP_ARCHIVE:-$ROOT/../shared/tools/llama.cpp/llama.cpp-3f545bec-linux-x86_64-zen4.tar.xz}
LLAMA_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/anvil/llama.cpp
PP=128
TG=128

die() { echo "bench_run: $*" >&2; exit 1; }

# OpenBLAS kernel set for anvil: the library's own CPU detection unless asked otherwise
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "bench_run: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE in the environment; anvil runs with ${ANVIL_BENCH_BLAS_CORE:-OpenBLAS autodetection}"
fi
unset OPENBLAS_CORETYPE
[ -n "${ANVIL_BENCH_BLAS_CORE:-}" ] && export OPENBLAS_CORETYPE=$ANVIL_BENCH_BLAS_CORE
for t in anvil-run anvil-convert; do [ -x "$BIN/$t" ] || die "$BIN/$t missing (run make)"; done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_RUN_REPS must be a positive integer"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_RUN_ROUNDS must be a positive integer"
command -v python3 >/dev/null || die "needs python3"
for f in stories260K-f32.gguf stories-d256-f32.gguf; do [ -f "$REF/$f" ] || die "$REF/$f missing"; done
mkdir -p "$DIR"
SCR=$DIR/run-scratch
rm -rf "$SCR"
mkdir -p "$SCR"
trap 'rm -rf "$SCR"' EXIT

# ---- peer: llama-bench from the prebuilt llama.cpp tools ----
. "$(dirname "$0")/lib/llamacpp.sh"
llamacpp_tool llama-bench "$SCR/untar.log"

# ---- membw ----
MEMBW=$DIR/membw
if [ ! -x "$MEMBW" ] || [ "$ROOT/scripts/bench/membw.c" -nt "$MEMBW" ]; then
  ${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -fopenmp "$ROOT/scripts/bench/membw.c" -o "$MEMBW.tmp"
  mv "$MEMBW.tmp" "$MEMBW"
fi

# ---- models: the two references, d256 as f16 (anvil convert) and quantized (anvil quantize,
# byte-identical to llama-quantize's files) ----
F16=$DIR/stories-d256-f16.gguf
"$BIN/anvil-convert" "$REF/stories-d256-f32.gguf" "$F16" --outtype f16 -q || die "anvil convert to f16 failed"
MODELS=("$REF/stories260K-f32.gguf" "$REF/stories-d256-f32.gguf" "$F16")
DTYPES=(f32 f32 f16)
for q in ${ANVIL_BENCH_RUN_QUANTS-Q8_0 Q6_K Q4_K_M Q4_0}; do
  [ -x "$BIN/anvil-quantize" ] || break
  "$BIN/anvil-quantize" "$REF/stories-d256-f32.gguf" "$DIR/stories-d256-$q.gguf" "$q" -q ||
    die "anvil quantize $q failed"
  MODELS+=("$DIR/stories-d256-$q.gguf")
  DTYPES+=("$q")
done

echo
echo "bench_run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, pp$PP / tg$TG, -r $REPS, $ROUNDS interleaved rounds (median)"
[ -n "$PEER" ] || echo "bench_run: llama-bench skipped: $PEER_WHY"

# one measurement: anvil and the peer, JSON rows appended to $SCR/<key>.anvil / .peer
for ((r = 1; r <= ROUNDS; r++)); do
  for i in "${!MODELS[@]}"; do
    m=${MODELS[$i]}
    for t in 1 2; do
      key=$i-$t
      "$BIN/anvil-run" "$m" --bench $PP,$TG -r "$REPS" -t $t --json >>"$SCR/$key.anvil" 2>"$SCR/err" ||
        die "anvil run --bench failed on $m: $(head -c 300 "$SCR/err")"
      if [ -n "$PEER" ] && [ ! -f "$SCR/$key.peerfail" ]; then
        if "$PEER" -m "$m" -p $PP -n $TG -r "$REPS" -t $t -o json >"$SCR/peer.json" 2>"$SCR/peer.log"; then
          python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$SCR/peer.json" >>"$SCR/$key.peer"
        else
          { grep -iE 'error|fail|unsupported|exception' "$SCR/peer.log" | head -2 | tr '\n' ' '; echo; } >"$SCR/$key.peerfail"
        fi
      fi
    done
  done
done

# ---- memcpy bandwidth: at each model's weight size and thread count, and 1 GiB ----
declare -A BW=()
for i in "${!MODELS[@]}"; do
  bytes=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["weight_bytes"])' "$SCR/$i-1.anvil")
  for t in 1 2; do BW[$i-$t]=$("$MEMBW" -t $t "$bytes" | awk '{ print $2 }'); done
done
DRAM1=$("$MEMBW" -t 1 1073741824 | awk '{ print $2 }')
DRAM2=$("$MEMBW" -t 2 1073741824 | awk '{ print $2 }')

# ---- table ----
ARGS=()
for i in "${!MODELS[@]}"; do
  for t in 1 2; do
    ARGS+=("$(basename "${MODELS[$i]}" .gguf)" "${DTYPES[$i]}" "$t" "$SCR/$i-$t.anvil" "$SCR/$i-$t.peer" \
           "$SCR/$i-$t.peerfail" "${BW[$i-$t]}")
  done
done
python3 - "$PP" "$TG" "$DRAM1" "$DRAM2" "${ARGS[@]}" <<'EOF'
import json, os, statistics, sys
pp, tg, dram1, dram2 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
a = sys.argv[5:]
def rows(path):
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def f(x, w, p=0):
    return f"{x:{w}.{p}f}" if x is not None else f"{'-':>{w}}"
def ratio(x, y):
    return x / y if x is not None and y else None
hdr = (f"{'model':<24} {'dtype':<6} {'thr':>3} | {'anvil pp':>9} {'llama pp':>9} {'ratio':>6} | "
       f"{'anvil tg':>9} {'llama tg':>9} {'ratio':>6} | {'bytes/tok':>10} {'memcpy':>7} {'bound':>8} "
       f"{'anvil %':>7} {'llama %':>7}")
print()
print(hdr)
print("-" * len(hdr))
notes = []
for k in range(0, len(a), 7):
    name, dt, thr, fa, fp, ff, bw = a[k:k + 7]
    an, pe = rows(fa), rows(fp)
    app = med([r["pp_tokens_per_s"] for r in an])
    atg = med([r["tg_tokens_per_s"] for r in an])
    lpp = med([x["avg_ts"] for r in pe for x in r if x["n_prompt"] == pp and x["n_gen"] == 0])
    ltg = med([x["avg_ts"] for r in pe for x in r if x["n_gen"] == tg and x["n_prompt"] == 0])
    wb = an[0]["weight_bytes"]
    bw = float(bw)
    bound = bw * 1e9 / wb
    print(f"{name:<24} {dt:<6} {thr:>3} | {f(app, 9)} {f(lpp, 9)} {f(ratio(app, lpp), 6, 2)} | "
          f"{f(atg, 9)} {f(ltg, 9)} {f(ratio(atg, ltg), 6, 2)} | {wb:>10} {bw:>7.1f} {bound:>8.0f} "
          f"{f(100 * atg / bound, 6, 1)}% {f(100 * ltg / bound if ltg else None, 6, 1)}%")
    if os.path.exists(ff):
        notes.append(f"llama-bench could not run {name} at {thr} threads: {open(ff).read().strip()}")
print()
print(f"(tokens/s; ratio = anvil / llama.cpp, > 1 means anvil is faster; medians over rounds of the mean of -r runs)")
print(f"(bytes/tok = weight bytes anvil reads per decoded token; memcpy = GB/s copying a buffer of that size")
print(f" with the same threads (hot in cache, as the weights are); bound = memcpy GB/s / bytes per token;")
print(f" % = tg as a share of that bound. memcpy both reads and writes each byte it counts, so a decode that only")
print(f" reads its weights can pass 100%. memcpy of 1 GiB (DRAM): {dram1:.1f} GB/s on 1 thread, {dram2:.1f} GB/s on 2)")
for n in notes:
    print(n)
EOF
