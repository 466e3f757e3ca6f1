#!/usr/bin/env bash
# bench_train.sh BIN_DIR — `anvil train` part of `make bench` (called at the end of scripts/bench.sh).
# Training throughput (tokens/s) and MFU of `anvil train --bench` (random tokens, full steps: forward,
# backward, clipping, AdamW) against a PyTorch peer with the same model, batch, sequence length and
# threads (scripts/bench_train_torch.py: plain PyTorch Llama, Debian's python3-torch), for two shapes:
#   stories260K-size  dim 64, 5 layers, 8 heads / 4 kv heads, ffn 172, vocab 512, seq 256, batch 16, tied
#   15M               dim 288, 6 layers, 6 heads / 6 kv heads, ffn 768, vocab 32000, seq 256, batch 8, tied
#                     (llama2.c's stories15M shape)
# at 1 and 2 threads, anvil and torch interleaved. Both use FLOPs/token = 6*N + 12*L*dim*T (PaLM
# appendix B); MFU = FLOPs/token * tokens/s / peak, and the peak is anvil's (sgemm GFLOP/s it measures
# in-process at the same thread count), handed to the peer with --peak-gflops so both MFUs share it.
#
# Best set-up for both: OPENBLAS_CORETYPE is unset (this machine's environment forces Haswell kernels,
# ~1.5x slower sgemm on Zen 4; ANVIL_BENCH_BLAS_CORE sets one for both); the peer gets exactly --threads
# OpenMP and OpenBLAS threads, OpenBLAS even when libblas.so.3 is the reference BLAS (LD_PRELOAD, see
# scripts/lib/torchblas.sh), and glibc malloc set to keep freed memory (see bench_train_torch.py).
#
# Environment:
#   ANVIL_BENCH_TRAIN_ROUNDS   interleaved rounds (default 1; cells are the median over rounds)
#   ANVIL_BENCH_TRAIN_THREADS  thread counts (default "1 2")
#   ANVIL_BENCH_PYTHON, ANVIL_BENCH_TORCH_PRELOAD: see scripts/lib/torchblas.sh
#   ANVIL_BENCH_BLAS_CORE      OPENBLAS_CORETYPE for anvil and the peer (default: unset, autodetection)
# Needs: python3 with torch for the peer (skipped with a printed reason when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
ROUNDS=${ANVIL_BENCH_TRAIN_ROUNDS:-1}
THREADS=${ANVIL_BENCH_TRAIN_THREADS:-1 2}

die() { echo "bench_train: $*" >&2; exit 1; }
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "bench_train: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE in the environment; anvil and torch run with ${ANVIL_BENCH_BLAS_CORE:-OpenBLAS autodetection}"
fi
unset OPENBLAS_CORETYPE
[ -n "${ANVIL_BENCH_BLAS_CORE:-}" ] && export OPENBLAS_CORETYPE=$ANVIL_BENCH_BLAS_CORE
[ -x "$BIN/anvil" ] || die "$BIN/anvil missing (run make)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_TRAIN_ROUNDS must be a positive integer"
mkdir -p "$DIR"
SCR=$DIR/train-scratch
rm -rf "$SCR"
mkdir -p "$SCR"
trap 'rm -rf "$SCR"' EXIT

# name | model flags (anvil's spelling; the peer takes the same) | batch | warm-up steps | timed steps
CONFIGS=(
  "stories260K-size|--dim 64 --layers 5 --heads 8 --kv-heads 4 --ffn 172 --vocab 512 --seq 256|16|2|10"
  "15M|--dim 288 --layers 6 --heads 6 --kv-heads 6 --ffn 768 --vocab 32000 --seq 256|8|2|4"
)

. "$(dirname "$0")/lib/torchblas.sh"
torch_peer_setup "$SCR/torch.log"
JPY=${TORCH_PY:-python3} # JSON reading

echo
echo "bench_train: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $ROUNDS round(s)"
if [ -n "$TORCH_PY" ]; then
  echo "bench_train: torch $("$TORCH_PY" -c 'import torch; print(torch.__version__)') ($TORCH_PY); $TORCH_NOTE"
else
  echo "bench_train: torch peer skipped: $TORCH_WHY"
fi

jget() { # FILE KEY... -> values of the last JSON line, "-" when absent / null
  "$JPY" - "$@" <<'EOF'
import json, sys
try:
    lines = [l for l in open(sys.argv[1]) if l.strip().startswith("{")]
    d = json.loads(lines[-1])
except Exception:
    d = {}
print(" ".join("-" if d.get(k) is None else str(d[k]) for k in sys.argv[2:]))
EOF
}

ANVIL_FAIL=""
for ((r = 1; r <= ROUNDS; r++)); do
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r name flags batch warm steps <<<"$c"
    for t in $THREADS; do
      key=$name-$t
      peak=""
      if [ -z "$ANVIL_FAIL" ]; then
        # shellcheck disable=SC2086
        if "$BIN/anvil" train --bench $flags --batch "$batch" --steps $((warm + steps)) --bench-warmup "$warm" \
             -t "$t" >"$SCR/out" 2>"$SCR/err" && [ "$(jget "$SCR/out" tokens_per_s)" != "-" ]; then
          grep '^{' "$SCR/out" | tail -1 >>"$SCR/$key.anvil"
          peak=$(jget "$SCR/out" peak_gflops)
          [ "$peak" = "-" ] && peak=""
        else
          ANVIL_FAIL="$name, $t thread(s): $( (grep -v '^$' "$SCR/err"; cat "$SCR/out") | head -2 | tr '\n' ' ' | cut -c1-300)"
          echo "bench_train: anvil train --bench failed: $ANVIL_FAIL" >&2
        fi
      fi
      if [ -n "$TORCH_PY" ]; then
        # shellcheck disable=SC2086
        if LD_PRELOAD=$TORCH_PRELOAD "$TORCH_PY" "$ROOT/scripts/bench_train_torch.py" $flags --batch "$batch" \
             --steps "$steps" --warmup-steps "$warm" --threads "$t" ${peak:+--peak-gflops "$peak"} \
             >"$SCR/tout" 2>"$SCR/terr"; then
          tail -1 "$SCR/tout" >>"$SCR/$key.torch"
        else
          echo "bench_train: torch peer failed on $name, $t thread(s): $(tail -1 "$SCR/terr")" >&2
        fi
      fi
    done
  done
done

# ---- table: per cell the median over rounds (tokens/s; MFU of the same run) ----
echo
printf '%-18s %7s %12s %12s %11s %9s %9s %10s %10s\n' config threads "anvil tok/s" "torch tok/s" "anvil/torch" \
  "anvil MFU" "torch MFU" "peak GF/s" "torch s/st"
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name _ _ _ _ <<<"$c"
  for t in $THREADS; do
    "$JPY" - "$name" "$t" "$SCR/$name-$t.anvil" "$SCR/$name-$t.torch" <<'EOF'
import json, sys
name, t, fa, ft = sys.argv[1:5]
def med(path):
    try:
        rows = [json.loads(l) for l in open(path) if l.strip()]
    except OSError:
        return None
    if not rows:
        return None
    rows.sort(key=lambda d: d["tokens_per_s"])
    return rows[(len(rows) - 1) // 2]
a, p = med(fa), med(ft)
f = lambda d, k, fmt: fmt % d[k] if d and d.get(k) is not None else "-"
ratio = "%.2fx" % (a["tokens_per_s"] / p["tokens_per_s"]) if a and p else "-"
mfu = lambda d: "%.1f%%" % (100 * d["mfu"]) if d and d.get("mfu") is not None else "-"
print("%-18s %7s %12s %12s %11s %9s %9s %10s %10s" % (name, t, f(a, "tokens_per_s", "%.0f"), f(p, "tokens_per_s", "%.0f"),
      ratio, mfu(a), mfu(p), f(a, "peak_gflops", "%.1f"), f(p, "step_s", "%.3f")))
EOF
  done
done
echo "(tokens/s over timed steps after untimed warm-up; MFU = FLOPs/token (6N + 12*L*dim*T) * tokens/s / anvil's"
echo " measured sgemm peak at the same thread count; ratio > 1: anvil faster)"
if [ -n "$ANVIL_FAIL" ]; then
  echo "bench_train: anvil train --bench failed: $ANVIL_FAIL"
  exit 1
fi
