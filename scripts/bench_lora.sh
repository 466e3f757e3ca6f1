#!/usr/bin/env bash
# bench_lora.sh BIN_DIR — `anvil train --lora` part of `make bench` (called by scripts/bench.sh).
#
# 1. Throughput: `anvil train --bench --lora --init BASE` (random tokens; full LoRA steps: forward,
#    backward through the frozen base, AdamW on A/B) on the stories-d256 base (dim 256, 4 layers, 8/4
#    heads, ffn 768, vocab 512, untied) as F32, Q8_0 and Q4_K_M, r 8, alpha 16, the seven targets,
#    seq 256, batch 16; against PyTorch with the same shapes and LoRA (scripts/bench_train_torch.py
#    --lora-r 8: frozen F32 base, PEFT-style A/B, AdamW on A/B), at 1 and 2 threads, interleaved.
#    PyTorch has no quantized-base training on CPU, so the quantized rows are compared with its F32 run.
# 2. Memory: peak RSS (VmHWM after the sgemm probe, reported by --bench) of LoRA training on a larger
#    quantized base — the TinyLlama-1.1B shapes cut to 8 layers (scripts/bench/mkgguf.c, 418M
#    parameters), Q4_K_M and Q8_0 — against the base file's size: the base is read in place and
#    dequantized a chunk of rows at a time, so RSS = file + activations + a few MB.
#
# Environment: ANVIL_BENCH_LORA_ROUNDS (default 1), ANVIL_BENCH_LORA_THREADS (default "1 2"),
#   ANVIL_BENCH_LORA_RSS=0 skips part 2, ANVIL_BENCH_DIR (cache), and scripts/lib/torchblas.sh's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
ROUNDS=${ANVIL_BENCH_LORA_ROUNDS:-1}
THREADS=${ANVIL_BENCH_LORA_THREADS:-1 2}
SHARED=${ANVIL_SHARED:-$ROOT/../shared}
BASE=$SHARED/reference/llamacpp/stories-d256-f32.gguf

die() { echo "bench_lora: $*" >&2; exit 1; }
unset OPENBLAS_CORETYPE
[ -n "${ANVIL_BENCH_BLAS_CORE:-}" ] && export OPENBLAS_CORETYPE=$ANVIL_BENCH_BLAS_CORE
[ -x "$BIN/anvil" ] || die "$BIN/anvil missing (run make)"
[ -f "$BASE" ] || die "$BASE missing"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_LORA_ROUNDS must be a positive integer"
mkdir -p "$DIR"
SCR=$DIR/lora-scratch
rm -rf "$SCR"
mkdir -p "$SCR"
trap 'rm -rf "$SCR"' EXIT

. "$(dirname "$0")/lib/torchblas.sh"
torch_peer_setup "$SCR/torch.log"
JPY=${TORCH_PY:-python3}
echo
echo "bench_lora: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $ROUNDS round(s)"
[ -n "$TORCH_PY" ] && echo "bench_lora: torch $("$TORCH_PY" -c 'import torch; print(torch.__version__)'); $TORCH_NOTE" ||
  echo "bench_lora: torch peer skipped: $TORCH_WHY"

for q in q8_0 q4_k_m; do
  [ -s "$DIR/d256-$q.gguf" ] || "$BIN/anvil" quantize "$BASE" "$DIR/d256-$q.gguf" "$q" -q
done
LORA=(--lora-r 8 --lora-alpha 16 --seq 256 --batch 16)
TORCH_FLAGS=(--dim 256 --layers 4 --heads 8 --kv-heads 4 --ffn 768 --vocab 512 --untied --seq 256 --batch 16
             --lora-r 8 --lora-alpha 16)
for ((r = 1; r <= ROUNDS; r++)); do
  for t in $THREADS; do
    for b in f32 q8_0 q4_k_m; do
      init=$BASE
      [ "$b" = f32 ] || init=$DIR/d256-$b.gguf
      "$BIN/anvil" train --bench --lora --init "$init" "${LORA[@]}" --steps 5 --bench-warmup 1 -t "$t" \
        >"$SCR/out" 2>"$SCR/err" || die "anvil train --bench --lora failed: $(head -2 "$SCR/err")"
      grep '^{' "$SCR/out" | tail -1 >>"$SCR/$b-$t.anvil"
    done
    if [ -n "$TORCH_PY" ]; then
      LD_PRELOAD=$TORCH_PRELOAD "$TORCH_PY" "$ROOT/scripts/bench_train_torch.py" "${TORCH_FLAGS[@]}" --steps 4 \
        --warmup-steps 1 --threads "$t" >"$SCR/tout" 2>"$SCR/terr" &&
        tail -1 "$SCR/tout" >>"$SCR/torch-$t.torch" ||
        echo "bench_lora: torch peer failed at $t thread(s): $(tail -1 "$SCR/terr")" >&2
    fi
  done
done

echo
printf '%-22s %7s %12s %12s %11s %12s\n' "LoRA r 8, d256 base" threads "anvil tok/s" "torch tok/s" "anvil/torch" "peak RSS MB"
for t in $THREADS; do
  for b in f32 q8_0 q4_k_m; do
    "$JPY" - "$b" "$t" "$SCR/$b-$t.anvil" "$SCR/torch-$t.torch" <<'EOF'
import json, sys
b, t, fa, ft = sys.argv[1:5]
def med(path):
    try:
        rows = [json.loads(l) for l in open(path) if l.strip()]
    except OSError:
        return None
    rows.sort(key=lambda d: d["tokens_per_s"])
    return rows[(len(rows) - 1) // 2] if rows else None
a, p = med(fa), med(ft)
ratio = "%.2fx" % (a["tokens_per_s"] / p["tokens_per_s"]) if a and p else "-"
print("%-22s %7s %12.0f %12s %11s %12.1f" % ("base " + b + ("" if b == "f32" else " (torch: f32)"), t,
      a["tokens_per_s"], "%.0f" % p["tokens_per_s"] if p else "-", ratio, a["peak_rss_mb"]))
EOF
  done
done
echo "(seq 256 x batch 16, 4 timed steps after 1 warm-up; torch: frozen F32 base, same shapes and LoRA; ratio > 1: anvil faster)"

[ "${ANVIL_BENCH_LORA_RSS:-1}" = 0 ] && exit 0
# ---- part 2: peak RSS against the base's size on a 418M-parameter quantized base ----
MK=$DIR/mkgguf
LIB=$ROOT/build/libanvil.a
if [ ! -x "$MK" ] || [ "$ROOT/scripts/bench/mkgguf.c" -nt "$MK" ] || [ "$LIB" -nt "$MK" ]; then
  ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -I"$ROOT/core" \
    "$ROOT/scripts/bench/mkgguf.c" "$LIB" $(sed -n 's/^LDLIBS *:= *//p' "$ROOT/Makefile") -o "$MK.tmp"
  mv "$MK.tmp" "$MK"
fi
F32=$DIR/tl8-f32.gguf
[ -s "$F32" ] || "$MK" "$F32" 8 >/dev/null
echo
printf '%-26s %11s %12s %12s %9s\n' "LoRA on TinyLlama-8L" "base MB" "peak RSS MB" "RSS - base" "ratio"
for q in q4_k_m q8_0; do
  Q=$DIR/tl8-$q.gguf
  [ -s "$Q" ] || "$BIN/anvil" quantize "$F32" "$Q" "$q" -q
  for rc in "" --recompute; do
    # shellcheck disable=SC2086
    "$BIN/anvil" train --bench --lora --init "$Q" --seq 64 --batch 1 --steps 3 --bench-warmup 1 -t 2 $rc \
      >"$SCR/rss" 2>"$SCR/err" || die "LoRA on $Q failed: $(head -2 "$SCR/err")"
    "$JPY" - "$Q" "$SCR/rss" "$q${rc:+ $rc}" <<'EOF'
import json, os, sys
q, out, name = sys.argv[1:4]
d = json.loads([l for l in open(out) if l.startswith("{")][-1])
base = os.path.getsize(q) / 2**20
print("%-26s %11.1f %12.1f %12.1f %8.2fx   (%.1f tok/s, r 8, seq 64 x batch 1, 2 threads)" % (
      "base " + name, base, d["peak_rss_mb"], d["peak_rss_mb"] - base, d["peak_rss_mb"] / base, d["tokens_per_s"]))
EOF
  done
done
echo "(goal: peak RSS <= base file size + 20 %; the f32 base would be $(( $(stat -c %s "$F32") >> 20 )) MB)"
