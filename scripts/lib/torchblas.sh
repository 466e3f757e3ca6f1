# torchblas.sh — sourced by the bench scripts: the set-up of a PyTorch peer (Debian's python3-torch).
#   torch_peer_setup LOG   sets TORCH_PY (the interpreter), TORCH_PRELOAD (LD_PRELOAD for the peer,
#                          may be empty), TORCH_NOTE (one line saying what was found / done), or
#                          TORCH_WHY (why there is no peer; TORCH_PY is then empty)
#
# Debian's torch calls sgemm_ from whatever libblas.so.3 the alternatives system points to; with the
# reference BLAS (netlib) it is 4-30x slower than with OpenBLAS. A bench must not reconfigure the
# system, so when libblas.so.3 is not OpenBLAS and an OpenBLAS libblas.so.3 is installed, the peer runs
# with that one in LD_PRELOAD — kept only when a 1024^2 matmul is measurably faster with it.
# Environment:
#   ANVIL_BENCH_PYTHON         interpreter with torch (default /usr/bin/python3)
#   ANVIL_BENCH_TORCH_PRELOAD  "none": never preload; a path (or space-separated paths): preload that
#                              (e.g. the reference BLAS, to see what an unfixed system gets)
# Needs: scripts/bench_train_torch.py (its --matmul-probe mode); the caller sets ROOT.
_torch_probe() { # LD_PRELOAD LOG -> prints "gflops<TAB>blas"
  LD_PRELOAD=$1 "$TORCH_PY" "$ROOT/scripts/bench_train_torch.py" --matmul-probe -t 1 2>>"$2" |
    "$TORCH_PY" -c 'import json,sys; d=json.load(sys.stdin); print("%s\t%s" % (d["matmul_gflops"], d["blas"]))'
}
torch_peer_setup() {
  local log=$1 base ob g0 g1 cand
  TORCH_PY=${ANVIL_BENCH_PYTHON:-/usr/bin/python3}
  TORCH_PRELOAD=""
  TORCH_NOTE=""
  TORCH_WHY=""
  if ! "$TORCH_PY" -c 'import torch' >"$log" 2>&1; then
    TORCH_WHY="$TORCH_PY cannot import torch: $(tail -1 "$log")"
    TORCH_PY=""
    return
  fi
  case ${ANVIL_BENCH_TORCH_PRELOAD:-} in
    none) TORCH_NOTE="BLAS: $(_torch_probe "" "$log" | cut -f2 || true) (no preload: ANVIL_BENCH_TORCH_PRELOAD=none)"; return ;;
    ?*) TORCH_PRELOAD=$ANVIL_BENCH_TORCH_PRELOAD
        TORCH_NOTE="BLAS: $(_torch_probe "$TORCH_PRELOAD" "$log" | cut -f2 || true) (LD_PRELOAD=$TORCH_PRELOAD from ANVIL_BENCH_TORCH_PRELOAD)"
        return ;;
  esac
  base=$(_torch_probe "" "$log") || { TORCH_WHY="matmul probe failed: $(tail -1 "$log")"; TORCH_PY=""; return; }
  g0=${base%%$'\t'*}
  case ${base#*$'\t'} in
    *OpenBLAS*|*MKL*|*mkl*)
      TORCH_NOTE="BLAS: ${base#*$'\t'}; 1024^2 sgemm $g0 GFLOP/s on 1 thread"
      return ;;
  esac
  ob=""
  for cand in /usr/lib/*/openblas-pthread /usr/lib/*/openblas-openmp /usr/lib/*/openblas-serial; do
    [ -f "$cand/libblas.so.3" ] && { ob=$cand; break; }
  done
  if [ -z "$ob" ]; then
    TORCH_NOTE="BLAS: ${base#*$'\t'} ($g0 GFLOP/s, slow) and no OpenBLAS libblas.so.3 to preload (apt-get install libopenblas0-pthread)"
    return
  fi
  cand="$ob/libblas.so.3"
  [ -f "$ob/liblapack.so.3" ] && cand="$cand $ob/liblapack.so.3"
  g1=$(_torch_probe "$cand" "$log" | cut -f1 || true)
  if awk -v a="$g0" -v b="${g1:-0}" 'BEGIN { exit !(b > 1.2 * a) }'; then
    TORCH_PRELOAD=$cand
    TORCH_NOTE="BLAS: ${base#*$'\t'}, $g0 GFLOP/s; the peer runs with LD_PRELOAD=$cand ($g1 GFLOP/s, 1024^2 sgemm, 1 thread); system alternatives left as they are"
  else
    TORCH_NOTE="BLAS: ${base#*$'\t'} ($g0 GFLOP/s); preloading $ob/libblas.so.3 did not help ($g1 GFLOP/s), not used"
  fi
}
