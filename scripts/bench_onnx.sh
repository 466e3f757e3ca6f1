#!/usr/bin/env bash
# bench_onnx.sh BIN_DIR — ONNX part of `make bench` (issue 11).
# (a) export time of `anvil convert MODEL.gguf OUT.onnx` (f32, and --int8 sym) for stories260K and
#     stories-d256: median wall time of 3 runs, with the file size.
# (b) onnxruntime-node (scripts/onnx/ort_bench.js, graph optimization 'all') on the --kv-cache f32
#     export beside `anvil run MODEL.gguf --bench 128,64` on the same model and thread count (1, 2):
#     pp128 = a 128-token prompt as one run from position 0, tg64 = 64 single-token steps from
#     position 0 through the KV cache; mean of REPS runs after a warm-up, median over ROUNDS
#     interleaved rounds (anvil, onnxruntime, anvil, ...). onnxruntime on the --int8 sym export
#     (which it runs as MatMulNBits, 8-bit, int8 activations) is printed beside for reference.
# Environment: ANVIL_BENCH_DIR (scratch, default /tmp/anvil-bench), ANVIL_BENCH_ONNX_REPS (3),
#   ANVIL_BENCH_ONNX_ROUNDS (3), ANVIL_NODE_DIR (onnxruntime-node, default ~/.cache/anvil/node,
#   installed by tests/cli/onnx.sh or: npm install --ignore-scripts onnxruntime-node@1.30.0).
# Needs: node + onnxruntime-node, python3. Takes about a minute on 2 idle cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REPS=${ANVIL_BENCH_ONNX_REPS:-3}
ROUNDS=${ANVIL_BENCH_ONNX_ROUNDS:-3}
REF=${ANVIL_SHARED_REF:-$ROOT/../shared/reference/llamacpp}
export ANVIL_NODE_DIR=${ANVIL_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/anvil/node}
PP=128
TG=64

die() { echo "bench_onnx: $*" >&2; exit 1; }

# anvil as the other bench scripts run it: OpenBLAS picks its own kernels
unset OPENBLAS_CORETYPE
for t in anvil-run anvil-convert; do [ -x "$BIN/$t" ] || die "$BIN/$t missing (run make)"; done
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_ONNX_REPS must be a positive integer"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_ONNX_ROUNDS must be a positive integer"
command -v python3 >/dev/null || die "needs python3"
command -v node >/dev/null || die "needs node"
node -e 'require(require("path").join(process.argv[1], "node_modules", "onnxruntime-node"))' "$ANVIL_NODE_DIR" 2>/dev/null ||
  die "onnxruntime-node not in $ANVIL_NODE_DIR (npm install --ignore-scripts onnxruntime-node@1.30.0 there)"
MODELS=(stories260K-f32 stories-d256-f32)
for m in "${MODELS[@]}"; do [ -f "$REF/$m.gguf" ] || die "$REF/$m.gguf missing"; done
mkdir -p "$DIR"
SCR=$DIR/onnx-scratch
rm -rf "$SCR"
mkdir -p "$SCR"
trap 'rm -rf "$SCR"' EXIT

echo
echo "bench_onnx: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
     "onnxruntime-node $(node -p 'require(require("path").join(process.argv[1], "node_modules", "onnxruntime-node", "package.json")).version' "$ANVIL_NODE_DIR")"

# ---- (a) export time ----
now() { date +%s%N; }
for m in "${MODELS[@]}"; do
  for kind in f32 int8; do
    fl=(); [ $kind = int8 ] && fl=(--int8 sym)
    for r in 1 2 3; do
      t0=$(now)
      "$BIN/anvil-convert" "$REF/$m.gguf" "$SCR/$m-$kind.onnx" "${fl[@]}" -q || die "anvil convert $m ${fl[*]} failed"
      echo $(( ($(now) - t0) / 1000 )) >>"$SCR/$m-$kind.export"
    done
    stat -c %s "$SCR/$m-$kind.onnx" >"$SCR/$m-$kind.size"
  done
  "$BIN/anvil-convert" "$REF/$m.gguf" "$SCR/$m-kv.onnx" --kv-cache -q || die "anvil convert --kv-cache failed"
  "$BIN/anvil-convert" "$REF/$m.gguf" "$SCR/$m-kv8.onnx" --kv-cache --int8 sym -q || die "anvil convert --int8 failed"
done

# ---- (b) tokens/s, interleaved rounds ----
for ((r = 1; r <= ROUNDS; r++)); do
  for m in "${MODELS[@]}"; do
    for t in 1 2; do
      "$BIN/anvil-run" "$REF/$m.gguf" --bench $PP,$TG -r "$REPS" -t $t --json >>"$SCR/$m-$t.anvil" 2>"$SCR/err" ||
        die "anvil run --bench failed on $m: $(head -c 300 "$SCR/err")"
      for k in kv kv8; do
        node "$ROOT/scripts/onnx/ort_bench.js" "$SCR/$m-$k.onnx" --pp $PP --tg $TG --threads $t --reps "$REPS" \
          >>"$SCR/$m-$t.$k" 2>"$SCR/err" || die "ort_bench.js failed on $m-$k: $(head -c 300 "$SCR/err")"
      done
    done
  done
done

python3 - "$SCR" "$PP" "$TG" "$REPS" "$ROUNDS" "${MODELS[@]}" <<'PY'
import json, os, statistics, sys
scr, pp, tg, reps, rounds, models = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:]
def rows(p): return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
def med(xs): return statistics.median(xs) if xs else None
def f(x, w, p=0): return f"{x:{w}.{p}f}" if x is not None else f"{'-':>{w}}"
print()
h = f"{'export (anvil convert)':<24} {'kind':<10} | {'median ms':>9} {'runs ms':>20} | {'bytes':>10} {'vs f32':>6}"
print(h); print("-" * len(h))
for m in models:
    f32 = int(open(f"{scr}/{m}-f32.size").read())
    for kind, label in (("f32", "f32"), ("int8", "--int8 sym")):
        ms = [int(x) / 1000 for x in open(f"{scr}/{m}-{kind}.export")]
        sz = int(open(f"{scr}/{m}-{kind}.size").read())
        print(f"{m:<24} {label:<10} | {statistics.median(ms):>9.1f} {' '.join(f'{x:.1f}' for x in ms):>20} | {sz:>10} {sz / f32:>6.1%}")
print()
h = (f"{'model':<18} {'thr':>3} | {'ort pp':>8} {'anvil pp':>8} {'ratio':>6} | {'ort tg':>8} {'anvil tg':>8} {'ratio':>6} | "
     f"{'ort8 pp':>8} {'ort8 tg':>8}")
print(h); print("-" * len(h))
for m in models:
    for t in (1, 2):
        a, o, o8 = rows(f"{scr}/{m}-{t}.anvil"), rows(f"{scr}/{m}-{t}.kv"), rows(f"{scr}/{m}-{t}.kv8")
        ap, at = med([r["pp_tokens_per_s"] for r in a]), med([r["tg_tokens_per_s"] for r in a])
        op, ot = med([r["pp_tokens_per_s"] for r in o]), med([r["tg_tokens_per_s"] for r in o])
        p8, t8 = med([r["pp_tokens_per_s"] for r in o8]), med([r["tg_tokens_per_s"] for r in o8])
        print(f"{m:<18} {t:>3} | {f(op, 8)} {f(ap, 8)} {f(op / ap, 6, 2)} | {f(ot, 8)} {f(at, 8)} {f(ot / at, 6, 2)} | "
              f"{f(p8, 8)} {f(t8, 8)}")
print()
print(f"(tokens/s, pp{pp} and tg{tg} from position 0; ratio = onnxruntime / anvil, < 1 means anvil is faster;")
print(f" medians over {rounds} interleaved rounds of the mean of {reps} runs. ort = onnxruntime-node on the f32")
print(f" --kv-cache export (graph optimization 'all'); anvil = anvil run --bench on the GGUF it was exported from;")
print(f" ort8 = onnxruntime on the --int8 sym --kv-cache export, for reference (no anvil twin))")
PY
