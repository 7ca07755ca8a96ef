#!/usr/bin/env bash
# Soak and reload-under-load run (loopback only). Starts `triage serve` with the default
# model, drives it with mixed /classify + /answer traffic from many clients for a number of
# minutes (`triage load`: one row per minute with throughput, latency, statuses, mismatched
# responses, server memory and conversations), optionally reloading model, FAQ and policy
# in turn every RELOAD_EVERY seconds, then stops the server with SIGTERM.
#
#   scripts/soak.sh 30                 # 30 minutes, no reloads
#   RELOAD_EVERY=5 scripts/soak.sh 5   # 5 minutes, a reload every 5 s
#
# Settings (environment): CLIENTS (64), PORT (8787), REPORT_EVERY (60 s),
# CONVERSATIONS (20000), RELOAD_EVERY (0 = no reloads). Logs go to a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
clients=${CLIENTS:-64}
port=${PORT:-8787}
report_every=${REPORT_EVERY:-60}
reload_every=${RELOAD_EVERY:-0}
conversations=${CONVERSATIONS:-20000}
out=$(mktemp -d)
cargo build --release --quiet
key="$out/admin.key"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key"
./target/release/triage serve --addr "127.0.0.1:$port" --admin-key-file "$key" 2>"$out/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  sleep 1
done
echo "server up (pid $server); logs in $out"
reloader=
if [ "$reload_every" -gt 0 ]; then
  (
    while kill -0 "$server" 2>/dev/null; do
      for what in model faq policy; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
          -H "Authorization: Bearer $(cat "$key")" "http://127.0.0.1:$port/admin/reload/$what" || echo 000)
        echo "$what $code" >>"$out/reloads.log"
        sleep "$reload_every"
      done
    done
  ) &
  reloader=$!
fi
./target/release/triage load --addr "127.0.0.1:$port" --route mixed --concurrency "$clients" \
  --duration-s $((minutes * 60)) --report-every-s "$report_every" --conversations "$conversations" \
  | tee "$out/load.md"
if [ -n "$reloader" ]; then
  kill "$reloader" 2>/dev/null || true
  echo "reloads (route status count):"
  sort "$out/reloads.log" | uniq -c
fi
kill -TERM "$server"
status=0
wait "$server" || status=$?
trap - EXIT
echo "server exit status after SIGTERM: $status"
