# scripts/bench-common.sh — sourced by the ingest benchmarks (bench-ingest,
# bench-ab): the stack's env, room on its disk, a work directory whose
# processes end with the script, and waiting for a server to answer.
# Expects ROOT; sets STATE_DIR, BASE, work and pids.

STATE_DIR="${TRIDENT_STACK_DIR:-$ROOT/.stack}"
[ -f "$STATE_DIR/env" ] || { echo "no $STATE_DIR/env: run scripts/stack up first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$STATE_DIR/env"
BASE="${TRIDENT_STACK_PORT_BASE:-47100}"

# Every run leaves its lines in the broker's topics; with the disk full,
# nodes and broker refuse writes and the numbers are meaningless (seen: the
# stack's broker data had grown to 11 GB over an evening of runs).
free_kb="$(df -Pk "$STATE_DIR" | awk 'NR == 2 { print $4 }')"
if [ "${free_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "only $((free_kb / 1024)) MB free on the disk of $STATE_DIR; the stack's servers need room for the benchmark's writes." >&2
  echo "Free some (scripts/stack down && rm -rf $STATE_DIR && scripts/stack up starts from empty data) and run again." >&2
  exit 1
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_http URL [LOG]: until URL answers 2xx, for up to 30 s; on failure
# the last lines of LOG (the server's) say why.
wait_http() {
  local url="$1" log="${2:-}" deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null "$url"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$url did not come up" >&2
      # Its last words, without the frames of a backtrace.
      [ -z "$log" ] || grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -5 >&2
      exit 1
    fi
    sleep 0.2
  done
}
