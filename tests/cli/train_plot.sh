#!/usr/bin/env bash
# anvil train plot: metrics.jsonl -> SVG. Inputs are made here with awk; the SVG is
# checked with Python's XML parser, the numbers against awk's reading of the input.
. "$(dirname "$0")/lib.bash"
cd "$TMP" || exit 1
# count failures so the script exits non-zero (check/expect_fail call notok by name)
_failed=0
eval "$(declare -f notok | sed '1s/^notok/_lib_notok/')"
notok() { _failed=$((_failed + 1)); _lib_notok "$@"; }

# 300 train steps (loss 5*exp(-step/50)+1; every 7th line has no "type", which still
# counts as train), validation every 50 steps, a config line and unknown keys to ignore
awk 'BEGIN {
  print "{\"type\":\"config\",\"dim\":64}"
  for (s = 1; s <= 300; s++) {
    if (s % 7) printf "{\"type\":\"train\",\"step\":%d,\"loss\":%.9g,\"lr\":0.001,\"mfu\":0.1}\n", s, 5*exp(-s/50)+1
    else       printf "{\"step\":%d,\"loss\":%.9g}\n", s, 5*exp(-s/50)+1
    if (s % 50 == 0) printf "{\"type\":\"val\",\"step\":%d,\"val_loss\":%.9g,\"val_ppl\":%.9g}\n", s, 5*exp(-s/50)+1.2, exp(5*exp(-s/50)+1.2)
  }
}' > m.jsonl
n_val=$(grep -c '"type":"val"' m.jsonl)
min_loss=$(awk -F'"loss":' 'NF > 1 { split($2, a, /[,}]/); if (min == "" || a[1] + 0 < min) min = a[1] + 0 } END { printf "%.9g", min }' m.jsonl)
final_val=$(awk -F'"val_loss":' 'NF > 1 { split($2, a, /[,}]/); v = a[1] } END { print v }' m.jsonl)

# svg FILE PYTHON-EXPR...: parse FILE (minidom) and assert each expression; helpers:
# els(tag, cls=None), cls(el), texts(tag, cls) (text of <tag> under groups/elements of class cls)
svg() {
  python3 - "$@" <<'PY'
import math, sys, xml.dom.minidom as M
d = M.parse(sys.argv[1]); root = d.documentElement
def cls(e): return e.getAttribute("class") if e.nodeType == 1 else ""
def els(tag, c=None): return [e for e in d.getElementsByTagName(tag) if c is None or cls(e) == c or cls(e.parentNode) == c]
def text(e): return "".join(n.data for n in e.childNodes if n.nodeType == n.TEXT_NODE)
def texts(tag, c): return [text(e) for e in els(tag, c)]
for expr in sys.argv[2:]:
    assert eval(expr), (expr, eval(expr.split("==")[0]) if "==" in expr else None)
PY
}

run "$BIN/anvil" train plot --help
check "plot --help exits 0 and prints usage on stdout" bash -c '[ "$1" -eq 0 ] && grep -q "usage: anvil train plot" <<<"$2"' _ "$RC" "$OUT"

run "$BIN/anvil" train plot m.jsonl -o a.svg --json
check "plot one file exits 0" [ "$RC" -eq 0 ]
check "  the SVG is well-formed XML: <svg> 800x450 with a viewBox" svg a.svg \
  'root.tagName == "svg" and root.getAttribute("viewBox") == "0 0 800 450"' \
  'root.getAttribute("width") == "800" and root.getAttribute("height") == "450"'
check "  2 polylines (train, val) and $n_val val circles" svg a.svg \
  "len(els('polyline')) == 2 and len(els('polyline', 'train')) == 1 and len(els('polyline', 'val')) == 1" \
  "len(els('circle', 'val-points')) == $n_val"
check "  train polyline has a point per step, val one per val line" svg a.svg \
  "len(els('polyline', 'train')[0].getAttribute('points').split()) == 300" \
  "len(els('polyline', 'val')[0].getAttribute('points').split()) == $n_val"
check "  title defaults to the file name; axis titles; 2 legend entries" svg a.svg \
  "texts('text', 'title') == ['m.jsonl']" "texts('text', 'xtitle') == ['step']" "texts('text', 'ytitle') == ['loss']" \
  "len(els('g', 'legend-entry')) == 2" "texts('text', 'legend-entry') == ['m.jsonl: train', 'm.jsonl: val']"
check "  a y tick label lies between min and max loss; x ticks reach 300" svg a.svg \
  "any($min_loss <= float(t) <= 6 for t in texts('text', 'yticks'))" "'300' in texts('text', 'xticks')"
check "  tick values are 1/2/5 x 10^k steps apart" svg a.svg \
  "all(round(abs(float(b) - float(a)), 9) in (1, 2, 5, 10, 20, 50, 100) for t in ('xticks', 'yticks') for a, b in zip(texts('text', t), texts('text', t)[1:]))"
check "  coordinates are printed with one decimal" bash -c '! grep -qE "[0-9]\.[0-9]{2}" <(grep -o "points=\"[^\"]*\"" a.svg)'
check "  --json: 300 train, $n_val val points, min_loss = $min_loss, final_val_loss = $final_val" python3 -c '
import json, sys
j = json.loads(sys.argv[1])
assert j["train_points"] == 300 and j["val_points"] == int(sys.argv[2]), j
assert abs(j["min_loss"] - float(sys.argv[3])) <= 1e-12 * abs(float(sys.argv[3])), j
assert abs(j["final_val_loss"] - float(sys.argv[4])) <= 1e-12, j
assert j["output"] == "a.svg", j' "$OUT" "$n_val" "$min_loss" "$final_val"

run "$BIN/anvil" train plot m.jsonl -o s.svg --smooth 10
check "--smooth 10: raw (faint) + smoothed train + val polylines" svg s.svg \
  "len(els('polyline')) == 3 and len(els('polyline', 'train-raw')) == 1 and len(els('polyline', 'train')) == 1"

run "$BIN/anvil" train plot m.jsonl -o log.svg --log-y
check "--log-y exits 0 with a well-formed SVG" bash -c '[ "$1" -eq 0 ] && [ -s log.svg ]' _ "$RC"
check "  axis says log scale; y ticks are 1/2/5 x 10^k, one inside the data" svg log.svg \
  "'log' in texts('text', 'ytitle')[0]" \
  "all(round(float(t) / 10 ** math.floor(math.log10(float(t))), 9) in (1, 2, 5) for t in texts('text', 'yticks'))" \
  "any($min_loss <= float(t) <= 6 for t in texts('text', 'yticks'))"

sed 's/"loss":/"extra":1,"loss":/' m.jsonl | awk '/"train"/ { sub(/"loss":[^,}]*/, "\"loss\":" 3*exp(-NR/100)+2) } { print }' > b.jsonl
run "$BIN/anvil" train plot m.jsonl b.jsonl -o two.svg --title 'A & B <"runs">' --json
check "two files exit 0: 4 legend entries, 2 colours" svg two.svg \
  "len(els('g', 'legend-entry')) == 4" \
  "texts('text', 'legend-entry') == ['m.jsonl: train', 'm.jsonl: val', 'b.jsonl: train', 'b.jsonl: val']" \
  "len(set(g.getAttribute('stroke') for g in els('g') if cls(g) == 'run')) == 2"
check "  the title is XML-escaped and reads back as given" svg two.svg "texts('text', 'title') == ['A & B <\"runs\">']"
check "  --json counts both files" python3 -c '
import json, sys
j = json.loads(sys.argv[1]); assert j["train_points"] == 600 and len(j["files"]) == 2, j' "$OUT"

awk 'BEGIN { for (s = 1; s <= 50000; s++) printf "{\"type\":\"train\",\"step\":%d,\"loss\":%.9g}\n", s, 2 + 1/sqrt(s) + 0.01*sin(s) }' > big.jsonl
run "$BIN/anvil" train plot big.jsonl -o big.svg --smooth 100
check "50000 steps: each train polyline downsampled to <= 2000 points, SVG < 150 KB" svg big.svg \
  "all(0 < len(p.getAttribute('points').split()) <= 2000 for p in els('polyline'))" "len(els('polyline')) == 2"
check "  (size $(wc -c < big.svg) bytes)" [ "$(wc -c < big.svg)" -lt 150000 ]

# failures: one stderr line naming the file (and line), exit 1, nothing written
head -2 m.jsonl > bad.jsonl; echo '{"type":"train","step":3,"loss":' >> bad.jsonl; tail -n +3 m.jsonl >> bad.jsonl
expect_fail "malformed JSON on line 3 is named (bad.jsonl:3)" "bad.jsonl:3" 1 "$BIN/anvil" train plot bad.jsonl -o x.svg
check "  no output file" [ ! -e x.svg ]
printf '{"type":"train","step":1,"loss":2}\n\n{"type":"val","val_loss":1.5}\n' > nostep.jsonl
expect_fail "a val line without a step is named (nostep.jsonl:3)" "nostep.jsonl:3" 1 "$BIN/anvil" train plot nostep.jsonl -o x.svg
printf '{"type":"train","step":"one","loss":2}\n' > strstep.jsonl
expect_fail "a non-numeric step is named (strstep.jsonl:1)" "strstep.jsonl:1" 1 "$BIN/anvil" train plot strstep.jsonl -o x.svg
printf '[1,2]\n' > arr.jsonl
expect_fail "a line that is not an object is named (arr.jsonl:1)" "arr.jsonl:1" 1 "$BIN/anvil" train plot arr.jsonl -o x.svg
: > empty.jsonl
expect_fail "an empty file is named" "empty.jsonl" 1 "$BIN/anvil" train plot empty.jsonl -o x.svg
printf '{"type":"config"}\n' > nopts.jsonl
expect_fail "a file with no train or val points is named" "nopts.jsonl" 1 "$BIN/anvil" train plot nopts.jsonl -o x.svg
expect_fail "a missing file is named" "/nonexistent/m.jsonl" 1 "$BIN/anvil" train plot m.jsonl /nonexistent/m.jsonl -o x.svg
printf '{"step":1,"loss":-1}\n{"step":2,"loss":0}\n' > neg.jsonl
expect_fail "--log-y with no positive loss fails" "positive" 1 "$BIN/anvil" train plot neg.jsonl -o x.svg --log-y
check "  none of these left x.svg or a temp file" bash -c '! ls -A | grep -q "^x\.svg"'
expect_fail "an unwritable output is named" "/nonexistent/out.svg" 1 "$BIN/anvil" train plot m.jsonl -o /nonexistent/out.svg
cp a.svg keep.svg
run "$BIN/anvil" train plot m.jsonl bad.jsonl -o a.svg
check "a failed run leaves an existing output untouched" bash -c '[ "$1" -eq 1 ] && cmp -s a.svg keep.svg' _ "$RC"

# usage errors
run "$BIN/anvil" train plot m.jsonl
check "no -o exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train plot -o x.svg
check "no input exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train plot m.jsonl -o x.svg --bogus
check "an unknown option exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train plot m.jsonl -o x.svg --smooth 0
check "--smooth 0 exits 2" [ "$RC" -eq 2 ]
run "$BIN/anvil" train plot m.jsonl -o
check "-o without a value exits 2" [ "$RC" -eq 2 ]
check "  and wrote nothing" [ ! -e x.svg ]

exit $((_failed > 0))
