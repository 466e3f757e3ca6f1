#!/usr/bin/env bash
# bench_tokenizer.sh BIN_DIR — tokenizer part of `make bench` (called at the end of scripts/bench.sh).
# In one run, interleaved rounds, medians, ratios against the peers measured in the same run:
#   1. byte-level BPE training, wall time and peak RSS (GNU /usr/bin/time %M), on tinyshakespeare and on a
#      >= 100 MB corpus (the bundled texts repeated, cached in ANVIL_BENCH_DIR):
#        - HF tokenizers (npm) Tokenizer.train() with its only trainer, the default BpeTrainer (target 30000,
#          stops earlier when no pairs are left); anvil is trained to the vocab size HF reached in the same round
#        - Debian spm_train --model_type=bpe --vocab_size=8192 vs anvil at 8192
#   2. cl100k_base encode throughput: anvil (`anvil tokenizer encode`, ids to /dev/null) vs npm tiktoken
#      (WASM, encode_ordinary), on tinyshakespeare and a 20 MB slice of the corpus, pinned to one core
#      (taskset -c 0) and unpinned (all cores). Neither encoder has a multi-threaded mode, so the "all cores"
#      rows run the same single-threaded code. Process start + vocabulary load is measured on an empty input
#      and subtracted, so MB/s reflects encoding (and, for anvil, printing the ids).
# Results and method: docs/BENCHMARKS.md ("Tokenizer (issue 4)").
#
# Environment:
#   ANVIL_BENCH_DIR            cache + scratch folder (default /tmp/anvil-bench)
#   ANVIL_BENCH_TOK_REPS       rounds for the small inputs (default 3)
#   ANVIL_BENCH_TOK_BIG_REPS   rounds for the 100 MB training runs (default 1) and the 20 MB encode slice (+1)
#   ANVIL_NODE_DIR             npm peers (tokenizers, tiktoken) from scripts/deps.sh (default ~/.cache/anvil/node)
# Needs: node + the npm peers, GNU /usr/bin/time, awk, taskset. Optional: spm_train (Debian sentencepiece).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$ROOT/bin}" && pwd)
DIR=${ANVIL_BENCH_DIR:-/tmp/anvil-bench}
REPS=${ANVIL_BENCH_TOK_REPS:-3}
BIG_REPS=${ANVIL_BENCH_TOK_BIG_REPS:-1}
NODE_DIR=${ANVIL_NODE_DIR:-$HOME/.cache/anvil/node}
DATA=${ANVIL_SHARED_DATA:-$ROOT/../shared/data}
[ -d "$DATA" ] || DATA=/work/shared/data
VOCAB=${ANVIL_SHARED_VOCAB:-$(dirname "$DATA")/vocab}
CL100K=$VOCAB/tiktoken/cl100k_base.tiktoken
TS=$DATA/tinyshakespeare.txt
ANVIL=$BIN/anvil-tokenizer

die() { echo "bench_tokenizer: $*" >&2; exit 1; }
skip() { echo "bench_tokenizer: skipped: $*"; exit 0; }
[ -x "$ANVIL" ] || die "$ANVIL missing (run make)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_TOK_REPS must be a positive integer"
[[ "$BIG_REPS" =~ ^[1-9][0-9]*$ ]] || die "ANVIL_BENCH_TOK_BIG_REPS must be a positive integer"
[ -f "$TS" ] || skip "$TS not found"
[ -f "$CL100K" ] || skip "$CL100K not found"
[ -x /usr/bin/time ] || skip "needs GNU /usr/bin/time"
command -v node >/dev/null || skip "needs node (scripts/deps.sh)"
[ -d "$NODE_DIR/node_modules/tokenizers" ] && [ -d "$NODE_DIR/node_modules/tiktoken" ] ||
  skip "npm tokenizers/tiktoken not in $NODE_DIR (scripts/deps.sh)"
export NODE_PATH=$NODE_DIR/node_modules
SPM=$(command -v spm_train || true)
PIN=(taskset -c 0)
command -v taskset >/dev/null || PIN=()

mkdir -p "$DIR"
SCR=$DIR/tok-scratch
cleanup() { rm -rf "$SCR"; }
trap cleanup EXIT
cleanup
mkdir -p "$SCR"

# ---- inputs: the bundled texts repeated to >= 100 MB (cached), and a 20 MB slice of it ----
BIG=$DIR/corpus100.txt
SLICE=$DIR/corpus20.txt
if [ ! -f "$BIG" ] || [ "$(stat -c %s "$BIG")" -lt 100000000 ]; then
  echo "bench_tokenizer: writing $BIG"
  srcs=("$TS")
  for f in "$DATA"/*.txt "$DATA"/*.raw; do [ -f "$f" ] && [ "$f" != "$TS" ] && srcs+=("$f"); done
  : >"$BIG.tmp"
  while [ "$(stat -c %s "$BIG.tmp")" -lt 100000000 ]; do
    for f in "${srcs[@]}"; do cat "$f"; [ -z "$(tail -c 1 "$f")" ] || echo; done >>"$BIG.tmp"
  done
  mv "$BIG.tmp" "$BIG"
  rm -f "$SLICE"
fi
if [ ! -f "$SLICE" ] || [ "$SLICE" -ot "$BIG" ]; then
  head -c 20000000 "$BIG" | sed '$d' >"$SLICE.tmp" # whole lines only
  mv "$SLICE.tmp" "$SLICE"
fi
: >"$SCR/empty.txt"
for f in "$TS" "$BIG" "$SLICE"; do cat "$f" >/dev/null; done # page cache

# ---- timing: wall from EPOCHREALTIME, peak RSS from /usr/bin/time %M (KiB) ----
declare -A WALL=() RSS=() NOTE=()
timed() { # KEY STDIN STDOUT CMD...
  local key=$1 in=$2 out=$3 t0 t1
  shift 3
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%M' -o "$SCR/time" "$@" <"$in" >"$out" 2>"$SCR/err" ||
    die "$key failed: $(tail -3 "$SCR/err" | tr '\n' ' ')"
  t1=$EPOCHREALTIME
  WALL[$key]+="$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN { printf "%.6f", b - a }') "
  RSS[$key]+="$(tail -1 "$SCR/time") "
}
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
best() { tr ' ' '\n' | awk 'NF' | sort -g | head -1; }
med() { median <<<"${WALL[$1]}"; }
mrss() { median <<<"${RSS[$1]}"; }
vocab_of() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["model"]["vocab"]))' "$1" 2>/dev/null || echo "?"; }

echo
echo "bench_tokenizer: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), node $(node --version)," \
  "$(for p in tokenizers tiktoken; do printf '%s@%s, ' "$p" "$(node -p "require('$NODE_PATH/$p/package.json').version")"; done)${SPM:+$(dpkg-query -W -f='sentencepiece ${Version}' sentencepiece 2>/dev/null || echo spm_train)}"
echo "bench_tokenizer: training inputs $TS ($(stat -c %s "$TS") B, $REPS rounds), $BIG ($(stat -c %s "$BIG") B, $BIG_REPS round(s))"

# ---- 1. training ----
train_round() { # TAG CORPUS
  local tag=$1 corpus=$2 hfv
  timed "$tag/hf" /dev/null "$SCR/hf.out" node "$ROOT/scripts/bench/hf_train.js" "$corpus"
  hfv=$(grep -o 'vocab=[0-9]*' "$SCR/hf.out" | cut -d= -f2)
  [ -n "$hfv" ] || die "hf_train.js printed no vocab size"
  NOTE[$tag/hfv]=$hfv
  NOTE[$tag/hfms]+="$(grep -o 'train_ms=[0-9.]*' "$SCR/hf.out" | cut -d= -f2) "
  timed "$tag/a-hf" /dev/null /dev/null "$ANVIL" train "$corpus" --vocab-size "$hfv" -o "$SCR/a-hf.json" -q
  NOTE[$tag/a-hfv]=$(vocab_of "$SCR/a-hf.json")
  timed "$tag/a-hf-t1" /dev/null /dev/null "$ANVIL" train "$corpus" --vocab-size "$hfv" -t 1 -o "$SCR/a-hf1.json" -q
  if [ -n "$SPM" ]; then
    timed "$tag/spm" /dev/null /dev/null "$SPM" --input="$corpus" --model_prefix="$SCR/spm" --model_type=bpe \
      --vocab_size=8192 --byte_fallback=true --character_coverage=1.0 --num_threads="$(nproc)" --minloglevel=2
    timed "$tag/a-8k" /dev/null /dev/null "$ANVIL" train "$corpus" --vocab-size 8192 -o "$SCR/a-8k.json" -q
    NOTE[$tag/a-8kv]=$(vocab_of "$SCR/a-8k.json")
  fi
}
for ((r = 1; r <= REPS; r++)); do train_round ts "$TS"; done
for ((r = 1; r <= BIG_REPS; r++)); do train_round big "$BIG"; done

echo
printf '%-16s %-44s %6s %8s %7s %8s %12s %11s\n' corpus "trainer (all cores unless noted)" vocab "median s" "best s" "RSS MiB" "peer/anvil t" "peer/anvil M"
row() { # CORPUS LABEL KEY VOCAB [ANVIL_KEY]
  local m b r am="" ar=""
  m=$(med "$3"); b=$(best <<<"${WALL[$3]}"); r=$(mrss "$3")
  if [ -n "${5:-}" ]; then am=$(med "$5"); ar=$(mrss "$5"); fi
  awk -v c="$1" -v l="$2" -v v="$4" -v m="$m" -v b="$b" -v r="$r" -v am="$am" -v ar="$ar" 'BEGIN {
    t = am != "" ? sprintf("%11.2fx", m / am) : sprintf("%12s", "")
    s = ar != "" ? sprintf("%10.2fx", r / ar) : sprintf("%11s", "")
    printf "%-16s %-44s %6s %8.3f %7.3f %8.1f %s %s\n", c, l, v, m, b, r / 1024, t, s }'
}
verdicts=()
for tag in ts big; do
  [ "$tag" = ts ] && cname=tinyshakespeare || cname="corpus $(awk -v b="$(stat -c %s "$BIG")" 'BEGIN { printf "%.0f MB", b / 1e6 }')"
  v=${NOTE[$tag/hfv]}
  row "$cname" "HF tokenizers train() (default BpeTrainer)" "$tag/hf" "$v" "$tag/a-hf"
  row "" "anvil train --vocab-size $v" "$tag/a-hf" "${NOTE[$tag/a-hfv]}"
  row "" "anvil train --vocab-size $v -t 1" "$tag/a-hf-t1" "$v"
  verdicts+=("$(awk -v c="$cname" -v p="$(med "$tag/hf")" -v a="$(med "$tag/a-hf")" -v pr="$(mrss "$tag/hf")" -v ar="$(mrss "$tag/a-hf")" 'BEGIN {
    printf "%s, vs HF tokenizers: %.2fx faster, %.2fx less peak RSS [goal >= 2x faster with lower RSS: %s]", c, p / a, pr / ar, (p / a >= 2 && ar < pr) ? "met" : "NOT met" }')")
  if [ -n "$SPM" ]; then
    row "" "spm_train --model_type=bpe --vocab_size=8192" "$tag/spm" 8192 "$tag/a-8k"
    row "" "anvil train --vocab-size 8192" "$tag/a-8k" "${NOTE[$tag/a-8kv]}"
    verdicts+=("$(awk -v c="$cname" -v p="$(med "$tag/spm")" -v a="$(med "$tag/a-8k")" -v pr="$(mrss "$tag/spm")" -v ar="$(mrss "$tag/a-8k")" 'BEGIN {
      printf "%s, vs spm_train:     %.2fx faster, %.2fx less peak RSS [goal >= 2x faster with lower RSS: %s]", c, p / a, pr / ar, (p / a >= 2 && ar < pr) ? "met" : "NOT met" }')")
  fi
done
echo "(wall time of the whole process, including node start for HF (~0.05 s); HF's own train() time, median: ts $(median <<<"${NOTE[ts/hfms]}") ms, 100 MB $(median <<<"${NOTE[big/hfms]}") ms)"
[ -n "$SPM" ] || echo "spm_train: skipped (Debian package sentencepiece not installed; scripts/deps.sh)"
printf '%s\n' "${verdicts[@]}"

# ---- 2. cl100k_base encode ----
declare -A ENC_TOKS=()
enc_round() { # TAG FILE
  local tag=$1 f=$2
  timed "$tag/a" "$f" /dev/null "$ANVIL" encode --tokenizer "$CL100K" --no-special
  if [ ${#PIN[@]} -gt 0 ]; then timed "$tag/a1" "$f" /dev/null "${PIN[@]}" "$ANVIL" encode --tokenizer "$CL100K" --no-special; fi
  timed "$tag/tk" /dev/null "$SCR/tk.out" node "$ROOT/scripts/bench/tiktoken_encode.js" "$f" cl100k_base
  ENC_TOKS[$tag/tk]=$(grep -o 'tokens=[0-9]*' "$SCR/tk.out" | cut -d= -f2)
  NOTE[$tag/tkms]+="$(grep -o 'encode_ms=[0-9.]*' "$SCR/tk.out" | cut -d= -f2) "
  if [ ${#PIN[@]} -gt 0 ]; then timed "$tag/tk1" /dev/null /dev/null "${PIN[@]}" node "$ROOT/scripts/bench/tiktoken_encode.js" "$f" cl100k_base; fi
}
for ((r = 1; r <= REPS; r++)); do enc_round empty "$SCR/empty.txt"; enc_round ts "$TS"; done
for ((r = 1; r <= BIG_REPS + 1; r++)); do enc_round slice "$SLICE"; done
# the token counts must agree (checked once, outside the timed runs)
for tag in ts slice; do
  [ "$tag" = ts ] && f=$TS || f=$SLICE
  n=$("$ANVIL" encode --tokenizer "$CL100K" --no-special <"$f" | wc -w)
  [ "$n" = "${ENC_TOKS[$tag/tk]}" ] || echo "bench_tokenizer: WARNING: $tag: anvil $n tokens, tiktoken ${ENC_TOKS[$tag/tk]}"
  ENC_TOKS[$tag/a]=$n
done

echo
echo "encode cl100k_base ($CL100K); start+load = median wall on an empty input; MB/s = bytes / (median wall - start+load), 1 MB = 1e6 B"
printf '%-18s %-40s %9s %9s %10s %8s %8s %11s\n' input encoder "tokens" "median s" "start+load" "MB/s" "RSS MiB" "vs tiktoken"
erow() { # INPUT LABEL TAG KEY BYTES TOKENS [TK_KEY]
  local m e tm="" te=""
  m=$(med "$3/$4"); e=$(med "empty/$4")
  if [ -n "${7:-}" ]; then tm=$(med "$3/$7"); te=$(med "empty/$7"); fi
  awk -v i="$1" -v l="$2" -v m="$m" -v e="$e" -v by="$5" -v n="$6" -v r="$(mrss "$3/$4")" -v tm="$tm" -v te="$te" 'BEGIN {
    mbs = by / (m - e) / 1e6
    v = tm != "" ? sprintf("%10.2fx", (tm - te) / (m - e)) : ""
    printf "%-18s %-40s %9s %9.3f %10.3f %8.2f %8.1f %s\n", i, l, n, m, e, mbs, r / 1024, v }'
}
enc_verdicts=()
for tag in ts slice; do
  [ "$tag" = ts ] && { f=$TS; iname=tinyshakespeare; } || { f=$SLICE; iname="corpus slice $(awk -v b="$(stat -c %s "$SLICE")" 'BEGIN { printf "%.0f MB", b / 1e6 }')"; }
  by=$(stat -c %s "$f")
  erow "$iname" "anvil encode (single-threaded), all cores" "$tag" a "$by" "${ENC_TOKS[$tag/a]}" tk
  [ ${#PIN[@]} -eq 0 ] || erow "" "anvil encode, taskset -c 0" "$tag" a1 "$by" "${ENC_TOKS[$tag/a]}" tk1
  erow "" "tiktoken npm (WASM, 1 thread), all cores" "$tag" tk "$by" "${ENC_TOKS[$tag/tk]}"
  [ ${#PIN[@]} -eq 0 ] || erow "" "tiktoken npm, taskset -c 0" "$tag" tk1 "$by" "${ENC_TOKS[$tag/tk]}"
  enc_verdicts+=("$(awk -v i="$iname" -v a="$(med "$tag/a")" -v ae="$(med empty/a)" -v t="$(med "$tag/tk")" -v te="$(med empty/tk)" -v ims="$(median <<<"${NOTE[$tag/tkms]}")" -v by="$by" 'BEGIN {
    r = (t - te) / (a - ae)
    printf "%s: anvil %.2f MB/s vs tiktoken %.2f MB/s (tiktoken in-process encode_ordinary: %.2f MB/s) = %.2fx [goal >= tiktoken: %s]", i, by / (a - ae) / 1e6, by / (t - te) / 1e6, by / ims / 1e3, r, (r >= 1) ? "met" : "NOT met" }')")
done
echo "(anvil's time includes printing the ids as text to /dev/null; tiktoken returns them in memory)"
echo "(neither encoder uses more than one thread: the all-cores rows run the same code as the pinned rows)"
printf '%s\n' "${enc_verdicts[@]}"
