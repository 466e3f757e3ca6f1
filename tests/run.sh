#!/usr/bin/env bash
# Run every Criterion suite given as arguments, then tests/cli/*.sh, and end
# with one line "N passed, N failed" over all of them (CI reads it).
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; failed_names=()
for t in "$@"; do
  out=$("$t" --jobs 2 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E 'Synthesis: Tested:' | tail -1)
  if [ -z "$line" ]; then
    printf '%s\n' "$out" | tail -20
    echo "FAIL $t crashed or printed no synthesis (rc=$rc)"; fail=$((fail+1)); failed_names+=("$t"); continue
  fi
  p=$(sed -E 's/.*Passing: ([0-9]+).*/\1/' <<<"$line")
  f=$(sed -E 's/.*Failing: ([0-9]+).*/\1/' <<<"$line")
  c=$(sed -E 's/.*Crashing: ([0-9]+).*/\1/' <<<"$line")
  pass=$((pass+p)); fail=$((fail+f+c))
  if [ "$rc" -ne 0 ] || [ $((f+c)) -ne 0 ]; then
    printf '%s\n' "$out" | grep -vE '^\[----\]|^\[====\] Running' | tail -30
    failed_names+=("$t")
    [ $((f+c)) -eq 0 ] && fail=$((fail+1))
  fi
  printf '%-40s %s\n' "$(basename "$t")" "$(sed -E 's/.*(Tested.*)/\1/' <<<"$line")"
done
for s in tests/cli/*.sh; do
  [ -e "$s" ] || continue
  out=$(bash "$s" 2>&1); rc=$?
  p=$(grep -c '^ok ' <<<"$out"); f=$(grep -c '^not ok ' <<<"$out")
  pass=$((pass+p)); fail=$((fail+f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail+1)); fi
  if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
    grep -E '^not ok|^#' <<<"$out" | head -40; failed_names+=("$s")
    [ "$rc" -ne 0 ] && tail -5 <<<"$out"
  fi
  printf '%-40s %d ok, %d not ok\n' "$(basename "$s")" "$p" "$f"
done
[ ${#failed_names[@]} -gt 0 ] && echo "failing: ${failed_names[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
