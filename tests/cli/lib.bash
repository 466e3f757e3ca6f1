# Shared helpers for CLI tests: TAP-style "ok N - what" / "not ok N - what".
# ANVIL_BIN (set by make test) points at the built tools; SHARED at ../shared.
set -u
BIN=${ANVIL_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/bin}
SHARED=${ANVIL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/../shared}
TMP=$(mktemp -d /tmp/anvil-cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
_n=0
ok()    { _n=$((_n+1)); echo "ok $_n - $*"; }
notok() { _n=$((_n+1)); echo "not ok $_n - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else notok "$what"; fi; }

# run CMD...: sets RC, OUT (stdout), ERR (stderr)
run() {
  "$@" >"$TMP/.stdout" 2>"$TMP/.stderr"; RC=$?
  OUT=$(cat "$TMP/.stdout"); ERR=$(cat "$TMP/.stderr")
}

# expect_fail WHAT FILE CODE CMD...: exit CODE, exactly one stderr line naming FILE
expect_fail() {
  local what=$1 file=$2 code=$3; shift 3
  run "$@"
  local lines; lines=$(printf '%s' "$ERR" | grep -c '')
  if [ "$RC" -eq "$code" ] && [ "$lines" -eq 1 ] && grep -qF -- "$file" <<<"$ERR"; then
    ok "$what"
  else
    notok "$what (rc=$RC, want $code; stderr: $(head -c 300 <<<"$ERR"))"
  fi
}
