#!/usr/bin/env bash
# ./jetinfer compose-test: docker-compose.yml for real, on a fresh copy of the
# repository, as a user would run it:
#
#   1. copy the repository to a temp dir: the working tree as a fresh clone
#      would have it (tracked and untracked files git does not ignore; no .env,
#      .state or target), or with --clone a `git clone` of HEAD
#   2. build the image, `up -d --build`, wait for 3 workers in the gateway's /status;
#      the init service created the NATS identities (admin, gateway, dashboard,
#      the worker pool), each file its service's user's alone; every container
#      (nats, the 3 replicas of the worker service, gateway, dashboard) healthy
#   3. one /infer per task (embed, similarity, classify, echo, classify_image on
#      Debian's chelsea.png, PHOTOS_DIR), GET /v1/models, a task asked of a
#      model that lacks it (503 no_worker), the dashboard page
#   4. 300 requests while one worker replica's process is SIGKILLed (a crash, as
#      the OOM killer does it): every one 200, the container restarted by its
#      restart policy, healthy again under the same worker identity. Not `docker kill`: Docker counts that as a manual stop and never
#      restarts the container (`restart: unless-stopped` or `always` alike)
#   5. `down` then `up -d`: image not rebuilt, NATS identities and nats-server's
#      access.conf kept byte for byte (init not rotating), JetStream data kept
#      (stream sequences, consumers, the heartbeat bucket), no model download
#   6. `stop`: bounded, and no container SIGKILLed (exit status 137)
#
# and prints build time, image size, memory per container and the time from
# `up` to 3 workers ready. Uses `docker compose` when present, else
# docker-compose (Debian's 1.29). Traffic goes only to 127.0.0.1 and the
# containers. Project name jetinfer-compose-test: its containers and volumes
# are its own and removed at the end (KEEP=1 keeps them); the image tag is the
# compose file's (jetinfer:latest). The host ports 8000, 3000, 4222 and 8222
# must be free. Without a registry, run ./jetinfer docker-bases first.
# COMPOSE_OVERRIDE=FILE is copied in as docker-compose.override.yml (which
# compose reads by itself): a local change (a proxy, a mirror) without editing
# the repository.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
ok() { printf '    ok  %s\n' "$*" >&2; }
info() { printf '        %s\n' "$*" >&2; }
fail() { printf '\033[31mFAIL\033[0m %s\n' "$*" >&2; dump_logs; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=tree
[ "${1:-}" = "--clone" ] && mode=clone

if docker compose version >/dev/null 2>&1; then
  compose_bin=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_bin=(docker-compose)
else
  echo "neither \`docker compose\` nor docker-compose found (Debian: apt-get install docker-compose)" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "cannot reach the Docker daemon" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "curl is needed" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed (to read JSON)" >&2; exit 1; }
[ -f "${PHOTOS_DIR:-}/usr/lib/python3/dist-packages/skimage/data/chelsea.png" ] \
  || { echo "PHOTOS_DIR must hold the photos of Debian's python3-skimage (./jetinfer compose-test fetches them)" >&2; exit 1; }

export COMPOSE_PROJECT_NAME=jetinfer-compose-test
GW=http://127.0.0.1:8000
DASH=http://127.0.0.1:3000
NATSMON=http://127.0.0.1:8222

work=$(mktemp -d /tmp/jetinfer-compose-test.XXXXXX)
dir="$work/jetinfer"
compose() { (cd "$dir" && "${compose_bin[@]}" "$@"); }
cleanup() {
  local rc=$?
  if [ "${KEEP:-}" = 1 ]; then
    echo "KEEP=1: stack and $dir kept (cd $dir && ${compose_bin[*]} -p $COMPOSE_PROJECT_NAME down -v)" >&2
  elif [ -d "$dir" ]; then
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
dumped=0
dump_logs() {
  [ "$dumped" = 0 ] && [ -d "$dir" ] || return 0
  dumped=1
  echo "--- compose ps ---" >&2
  compose ps >&2 || true
  echo "--- last logs ---" >&2
  compose logs --tail=15 >&2 || true
}

# JSON from stdin, a Python expression over it as `j`.
json() { python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
container() { compose ps -q "$1"; }
# SIGKILL a container's main process from outside: a crash, which the restart
# policy answers (root on the host kills it directly; otherwise a throwaway
# container in the host's PID namespace does).
crash() {
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' "$1")
  if [ "$(id -u)" = 0 ]; then
    kill -9 "$pid"
  else
    docker run --rm --pid=host --user root --entrypoint sh "$image" -c "kill -9 $pid"
  fi
}

for port in 8000 3000 4222 8222; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is in use (./jetinfer up or another compose stack?); stop it first" >&2
    exit 1
  fi
done

# "Created on first up" needs no volume of this project yet (a KEEP=1 run's?).
left=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
if [ -n "$left" ]; then
  echo "volumes of an earlier $COMPOSE_PROJECT_NAME stack exist ($(echo $left)): remove them first (docker volume rm $(echo $left))" >&2
  exit 1
fi

# --- 1. a fresh copy -------------------------------------------------------------
if [ "$mode" = clone ]; then
  say "git clone $repo (HEAD: $(git -C "$repo" rev-parse --short HEAD))"
  git clone --quiet "$repo" "$dir"
else
  say "copying the working tree of $repo as a fresh clone has it"
  mkdir -p "$dir"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
     | tar --null -T - -cf -) | tar -C "$dir" -xf -
fi
[ ! -e "$dir/.env" ] || fail ".env in the copy"
if [ -n "${COMPOSE_OVERRIDE:-}" ]; then
  cp "$COMPOSE_OVERRIDE" "$dir/docker-compose.override.yml"
  info "with COMPOSE_OVERRIDE=$COMPOSE_OVERRIDE as docker-compose.override.yml"
fi
ok "$(cd "$dir" && find . -type f -not -path './.git/*' | wc -l) files in $dir, no .env"
info "compose: ${compose_bin[*]} ($("${compose_bin[@]}" version --short 2>/dev/null || "${compose_bin[@]}" version | head -1))"

# --- 2. build and up ---------------------------------------------------------------
say "build (${compose_bin[*]} build)"
t=$(now)
compose build >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; fail "build failed (no registry? ./jetinfer docker-bases)"; }
build_s=$(since "$t")
image=$(compose config | sed -n 's/^ *image: *\(jetinfer[^ ]*\) *$/\1/p' | head -1)
image_id=$(docker image inspect -f '{{.Id}}' "$image")
image_mb=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f", $1/1e6}')
ok "built $image in ${build_s}s ($(grep -c 'Using cache' "$work/build.log" || true) cached steps), ${image_mb} MB"

wait_workers() { # wait_workers N TIMEOUT_S: N ready workers in /status
  local n=$1 deadline=$((SECONDS + $2)) got=
  while [ "$SECONDS" -lt "$deadline" ]; do
    got=$(curl -fsS --max-time 3 "$GW/status" 2>/dev/null \
          | json 'sum(1 for w in j["workers"] if w.get("state") == "ready")' 2>/dev/null || true)
    [ "${got:-0}" -ge "$n" ] && return 0
    sleep 0.5
  done
  return 1
}

say "up -d --build"
t=$(now)
compose up -d --build >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "up failed"; }
up_cmd_s=$(since "$t")
wait_workers 3 240 || fail "3 workers not ready within 240 s"
ready_s=$(since "$t")
ok "3 workers ready ${ready_s}s after \`up\` (the up command itself: ${up_cmd_s}s)"
[ "$(docker image inspect -f '{{.Id}}' "$image")" = "$image_id" ] || fail "up --build rebuilt the image"
# (Logs into a variable first: `grep -q` closing the pipe early would fail it under pipefail.)
logs_of() { compose logs --no-color "$1" 2>&1; }
# The secrets step: admin, gateway, dashboard and the worker pool (init's
# WORKERS), said once in init's log and on the volume, as nats sees it.
pool=$(compose config | sed -n "s/^ *WORKERS: *['\"]\{0,1\}\([0-9][0-9]*\)['\"]\{0,1\} *$/\1/p" | head -1)
[ -n "$pool" ] && [ "$pool" -ge 3 ] || fail "init's WORKERS (the worker identity pool) is '${pool}', not 3 or more"
expected=$(printf '%s\n' admin gateway dashboard $(seq -f 'worker-%g' 1 "$pool") | sort | tr '\n' ' ')
init_log=$(logs_of init)
ready_line=$(grep -o 'ready: NATS identities in [^ ]* (.*)' <<<"$init_log" || true)
[ "$(grep -c . <<<"$ready_line")" = 1 ] || fail "init did not say 'ready: NATS identities in …' once: $(tail -c 400 <<<"$init_log")"
listed=$(sed 's/.*(\(.*\))/\1/' <<<"$ready_line" | tr -d ' ' | tr ',' '\n' | sort | tr '\n' ' ')
[ "$listed" = "$expected" ] || fail "init's identities: '$listed', not '$expected'"
! grep -q 'rotated' <<<"$init_log" || fail "init rotated the identities"
nats_id=$(container nats)
on_volume=$(docker exec -u 0 "$nats_id" sh -c 'cd /run/secrets/jetinfer/identities && for f in *.env; do n=${f%.env}; grep -qx "NATS_USER=$n" "$f" && grep -q "^NATS_PASSWORD=..*" "$f" && echo "$n"; done' | sort | tr '\n' ' ')
[ "$on_volume" = "$expected" ] || fail "identity files with their own NATS_USER and a NATS_PASSWORD: '$on_volume', not '$expected'"
docker exec -u 0 "$nats_id" test -s /run/secrets/jetinfer/nats-server/access.conf || fail "no nats-server/access.conf on the secrets volume"
# Each file its service's user's alone (the jetinfer image has the users; admin: root).
owners=$(docker exec -u 0 "$(container gateway)" sh -c 'cd /run/secrets/jetinfer/identities && stat -c "%n %U %a" admin.env gateway.env dashboard.env worker-1.env')
[ "$owners" = "admin.env root 600
gateway.env jetinfer-gateway 600
dashboard.env jetinfer-dashboard 600
worker-1.env jetinfer-worker 600" ] || fail "identity files' owners and modes: $(echo $owners)"
ok "init created $(wc -w <<<"$expected") NATS identities (admin, gateway, dashboard, worker-1 … worker-$pool) and access.conf; each file 0600, its service's user's"
# Every container: nats, gateway, dashboard and each replica of the worker service.
checked=0
for s in nats worker gateway dashboard; do
  ids=$(container $s)
  [ -n "$ids" ] || fail "no $s container"
  for id in $ids; do
    name=$(docker inspect -f '{{.Name}}' "$id"); name=${name#/}; name=${name#"$COMPOSE_PROJECT_NAME"[_-]}
    h=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    deadline=$((SECONDS + 60))
    while [ "$h" != healthy ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 1
      h=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    done
    [ "$h" = healthy ] || fail "$name is ${h:-without a healthcheck}, not healthy ($(docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}} {{end}}' "$id" | tail -c 300))"
    checked=$((checked + 1))
  done
done
workers_n=$(container worker | wc -l)
[ "$workers_n" = 3 ] || fail "$workers_n worker containers, not the 3 replicas of the worker service"
ok "all $checked healthy: nats, the 3 worker replicas, gateway, dashboard"

# --- 3. every task, the dashboard ---------------------------------------------------
say "POST /infer, one per task"
infer() { curl -fsS --max-time 30 "$GW/infer" -H 'content-type: application/json' -d "$1"; }
out=$(infer '{"task":"embed","input":"This is an example sentence"}') || fail "embed"
[ "$(echo "$out" | json 'len(j["output"]["embedding"])')" = 384 ] || fail "embed: $out"
ok "embed: 384 floats, first $(echo "$out" | json 'round(j["output"]["embedding"][0], 6)'), worker $(echo "$out" | json 'j["worker_id"]')"
out=$(infer '{"task":"similarity","input":{"query":"A man is eating food.","candidates":["A man is eating pasta.","The girl is playing guitar.","A cheetah runs."]}}') || fail "similarity"
[ "$(echo "$out" | json 'j["output"]["scores"][0]["index"]')" = 0 ] || fail "similarity: $out"
ok "similarity: best 'A man is eating pasta.' ($(echo "$out" | json 'round(j["output"]["scores"][0]["score"], 4)'))"
out=$(infer '{"task":"classify","input":"I love this"}') || fail "classify"
[ "$(echo "$out" | json 'j["output"]["label"]')" = positive ] || fail "classify: $out"
out=$(infer '{"task":"classify","input":"The match went to extra time","labels":["sports","cooking"]}') || fail "classify labels"
[ "$(echo "$out" | json 'j["output"]["label"]')" = sports ] || fail "classify labels: $out"
ok "classify: 'I love this' positive, 'The match went to extra time' sports"
out=$(infer '{"task":"echo","input":"hi"}') || fail "echo"
[ "$(echo "$out" | json 'j["output"]["echo"]')" = hi ] || fail "echo: $out"
ok "echo"
cat_png="$PHOTOS_DIR/usr/lib/python3/dist-packages/skimage/data/chelsea.png"
out=$(curl -fsS --max-time 30 "$GW/infer?task=classify_image" -H 'content-type: image/png' --data-binary @"$cat_png") || fail "classify_image"
[ "$(echo "$out" | json 'j["model"]')" = efficientnet-lite0 ] || fail "classify_image: $out"
[ "$(echo "$out" | json 'j["output"]["top"][0]["index"] in range(281, 286)')" = True ] || fail "classify_image: not a cat: $out"
ok "classify_image: chelsea.png is a $(echo "$out" | json 'j["output"]["label"]') ($(echo "$out" | json 'round(j["output"]["top"][0]["score"], 3)'))"
models=$(curl -fsS "$GW/v1/models" | json '",".join("%s:%s" % (m["id"], m["workers"]) for m in j["data"])')
[ "$models" = "all-minilm-l6-v2:3,echo:3,efficientnet-lite0:3" ] || fail "/v1/models: $models"
ok "GET /v1/models: $models"
code=$(curl -sS -o /tmp/jetinfer-no-worker.json -w '%{http_code}' "$GW/infer" -H 'content-type: application/json' -d '{"task":"classify_image","input":"aGk=","model":"all-minilm-l6-v2"}')
[ "$code" = 503 ] && grep -q '"no_worker"' /tmp/jetinfer-no-worker.json || fail "photos asked of the text model: $code $(cat /tmp/jetinfer-no-worker.json)"
ok "photos asked of the text model: 503 no_worker at once"

say "dashboard"
page=$(curl -fsS --max-time 5 "$DASH/") || fail "GET $DASH/"
grep -q '<title>jetinfer dashboard</title>' <<<"$page" || fail "dashboard page has no title"
workers_seen=$(curl -fsS --max-time 5 "$DASH/api/snapshot" | json 'len(j["workers"])') || fail "GET /api/snapshot"
ok "GET / ($(echo "$page" | wc -c) bytes), /api/snapshot shows $workers_seen workers"

# --- 4. kill a worker under load -----------------------------------------------------
# The worker service's second replica (by compose's container number), and the
# worker-<n> identity its process claimed from the pool (its id in answers).
victim=
for id in $(container worker); do
  [ "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.container-number"}}' "$id")" = 2 ] && victim=$id
done
[ -n "$victim" ] || fail "no worker replica number 2"
vname=$(docker inspect -f '{{.Name}}' "$victim"); vname=${vname#/}; vname=${vname#"$COMPOSE_PROJECT_NAME"[_-]}
claimed() { docker logs "$1" 2>&1 | grep -o '"worker_id":"worker-[0-9]*"' | tail -1 | cut -d'"' -f4; }
vid=$(claimed "$victim")
[ -n "$vid" ] || fail "$vname's log names no worker identity"
say "300 requests, $vname's process ($vid) SIGKILLed in the middle"
restarts0=$(docker inspect -f '{{.RestartCount}}' "$victim")
results="$work/load.txt"
bodies="$work/bodies"
mkdir -p "$bodies"
: >"$results"
t=$(now)
# One small write per answer (its status), so parallel curls never interleave.
seq 1 300 | xargs -P 24 -I{} curl -s --max-time 60 -o "$bodies/{}.json" -w '%{http_code}\n' "$GW/infer" \
  -H 'content-type: application/json' -d '{"task":"embed","input":"sentence number {} for the kill test"}' \
  >>"$results" 2>/dev/null &
load=$!
while [ "$(wc -l <"$results")" -lt 100 ] && kill -0 "$load" 2>/dev/null; do sleep 0.05; done
crash "$victim"
killed_at=$(wc -l <"$results")
wait "$load" || true
load_s=$(since "$t")
total=$(wc -l <"$results")
good=$(grep -cx 200 "$results" || true)
retried=$(cat "$bodies"/*.json | grep -o '"retries":[1-9][0-9]*' | wc -l || true)
by_worker=$(cat "$bodies"/*.json | grep -o '"worker_id":"[^"]*"' | cut -d'"' -f4 | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}' || true)
[ "$total" = 300 ] && [ "$good" = 300 ] || {
  sort "$results" | uniq -c >&2
  fail "$good of $total answered 200"
}
ok "300/300 answered 200 in ${load_s}s ($vname, $vid, killed after $killed_at answers; $retried answered after a redelivery)"
info "per worker: $by_worker"
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  [ "$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$victim")" = "$((restarts0 + 1)) true" ] && break
  sleep 0.5
done
[ "$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$victim")" = "$((restarts0 + 1)) true" ] \
  || fail "$vname was not restarted ($(docker inspect -f 'restart count {{.RestartCount}}, {{.State.Status}}, exit status {{.State.ExitCode}}' "$victim"))"
# Healthy again: its new process connected to NATS and heartbeats (the old
# heartbeat alone could still make /status count it ready).
deadline=$((SECONDS + 60))
while [ "$(docker inspect -f '{{.State.Health.Status}}' "$victim")" != healthy ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
[ "$(docker inspect -f '{{.State.Health.Status}}' "$victim")" = healthy ] || fail "$vname not healthy again after its restart"
[ "$(claimed "$victim")" = "$vid" ] || fail "$vname came back as $(claimed "$victim"), not $vid (the kernel drops a dead process's claim)"
wait_workers 3 60 || fail "$vname did not come back into /status"
ok "$vname restarted by its restart policy (restart count $(docker inspect -f '{{.RestartCount}}' "$victim")), healthy again as $vid; 3 workers ready"

# --- 5. down, up: what survives ---------------------------------------------------------
streams() { # name:last_seq:consumers for each stream, from nats' monitoring endpoint
  curl -fsS --max-time 5 "$NATSMON/jsz?accounts=true&streams=true&consumers=true" | json '" ".join(sorted(
    "%s:%d:%d" % (s["name"], s["state"]["last_seq"], len(s.get("consumer_detail") or []))
    for a in j.get("account_details", []) for s in a.get("stream_detail", [])))'
}
say "down, then up -d"
# Let the killed worker's old heartbeat age out, so the bucket's sequence is stable.
sleep 4
before=$(streams)
info "before: $before"
# The identity files and access.conf, as nats (root) reads them: content and mtime.
secrets_sum() {
  docker exec -u 0 "$(container nats)" sh -c 'cd /run/secrets/jetinfer && for f in identities/*.env nats-server/access.conf; do echo "$f $(md5sum <"$f")"; done' | md5sum
}
mtimes() { docker exec -u 0 "$(container nats)" sh -c 'stat -c "%n %Y" /run/secrets/jetinfer/identities/*.env' | md5sum; }
secrets_before=$(secrets_sum)
mtimes_before=$(mtimes)
compose down >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; fail "down"; }
[ -z "$(compose ps -q)" ] || fail "containers left after down"
t=$(now)
compose up -d >"$work/up2.log" 2>&1 || { cat "$work/up2.log" >&2; fail "second up"; }
wait_workers 3 240 || fail "3 workers not ready after the second up"
ready2_s=$(since "$t")
[ "$(docker image inspect -f '{{.Id}}' "$image")" = "$image_id" ] || fail "the image was rebuilt"
grep -qiE 'Building|Step [0-9]' "$work/up2.log" && fail "the second up built something"
ok "image not rebuilt; 3 workers ready ${ready2_s}s after the second up"
init_log=$(logs_of init)
grep -q 'ready: NATS identities in ' <<<"$init_log" || fail "init did not run again on the second up: $(tail -c 400 <<<"$init_log")"
! grep -q 'rotated' <<<"$init_log" || fail "init rotated the identities on the second up"
[ "$(secrets_sum)" = "$secrets_before" ] || fail "the NATS identities or access.conf changed across down/up"
[ "$(mtimes)" = "$mtimes_before" ] || fail "init rewrote identity files across down/up"
ok "NATS identities kept: init ran again, $(wc -w <<<"$expected") identity files and access.conf unchanged, none rewritten"
after=$(streams)
info "after:  $after"
for name in INFER_TASKS INFER_RESULTS KV_INFER_WORKERS; do
  b=$(tr ' ' '\n' <<<"$before" | grep "^$name:" || true)
  a=$(tr ' ' '\n' <<<"$after" | grep "^$name:" || true)
  [ -n "$b" ] && [ -n "$a" ] || fail "stream $name missing (before '$b', after '$a')"
  b_seq=$(cut -d: -f2 <<<"$b"); a_seq=$(cut -d: -f2 <<<"$a")
  [ "$a_seq" -ge "$b_seq" ] && [ "$b_seq" -gt 0 ] || fail "$name: last_seq $b_seq before, $a_seq after: JetStream data lost"
done
tasks_b=$(tr ' ' '\n' <<<"$before" | grep '^INFER_TASKS:' | cut -d: -f2)
tasks_a=$(tr ' ' '\n' <<<"$after" | grep '^INFER_TASKS:' | cut -d: -f2)
[ "$tasks_a" = "$tasks_b" ] || fail "INFER_TASKS last_seq $tasks_b -> $tasks_a without traffic"
cons_b=$(tr ' ' '\n' <<<"$before" | grep '^INFER_TASKS:' | cut -d: -f3)
cons_a=$(tr ' ' '\n' <<<"$after" | grep '^INFER_TASKS:' | cut -d: -f3)
[ "$cons_b" -gt 0 ] && [ "$cons_a" = "$cons_b" ] || fail "INFER_TASKS consumers: $cons_b before, $cons_a after"
ok "JetStream kept: INFER_TASKS at sequence $tasks_a with its $cons_a consumers, INFER_RESULTS, KV_INFER_WORKERS"
out=$(infer '{"task":"embed","input":"after the restart"}') || fail "infer after the second up"
ok "embed after the second up: worker $(echo "$out" | json 'j["worker_id"]')"
workers_log=$(logs_of worker)
! grep -qi 'download' <<<"$workers_log" || fail "a worker downloaded something: $(grep -i 'download' <<<"$workers_log" | tail -1)"
text_dir=$(grep 'loading the text model' <<<"$workers_log" | grep -o '"dir":"[^"]*"' | sort -u | cut -d'"' -f4 | tr '\n' ' ')
image_dir=$(grep 'loading the image model' <<<"$workers_log" | grep -o '"dir":"[^"]*"' | sort -u | cut -d'"' -f4 | tr '\n' ' ')
[ -n "$text_dir" ] && [ -n "$image_dir" ] || fail "the workers' logs say no model folder (text '$text_dir', image '$image_dir')"
ok "no model download: every worker loaded ${text_dir}and ${image_dir% } from the image"

say "resources"
docker stats --no-stream --format '{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}' \
  $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME") \
  | sed "s/^$COMPOSE_PROJECT_NAME[_-]//" | sort | column -t >&2

# --- 6. stop ------------------------------------------------------------------------------
say "stop (with a dashboard page open: an SSE client on /api/stream)"
curl -sN --max-time 120 "$DASH/api/stream" >/dev/null 2>&1 &
sse=$!
sleep 1
ids=$(compose ps -q)
t=$(now)
compose stop >"$work/stop.log" 2>&1 || { cat "$work/stop.log" >&2; fail "stop"; }
stop_s=$(since "$t")
kill "$sse" 2>/dev/null || true
killed=
while read -r name code; do
  info "${name#/}: exit status $code"
  [ "$code" = 137 ] && killed="$killed ${name#/}"
done < <(docker inspect -f '{{.Name}} {{.State.ExitCode}}' $ids)
[ -z "$killed" ] || fail "SIGKILLed (exit status 137) after ${stop_s}s: its stop_grace_period ran out:$killed"
ok "stopped in ${stop_s}s, no container SIGKILLed"

say "summary"
cat >&2 <<EOF
    compose              ${compose_bin[*]}
    build                ${build_s}s
    image                $image ${image_mb} MB
    up -> 3 workers      ${ready_s}s (second up: ${ready2_s}s)
    NATS identities      $(wc -w <<<"$expected") created on first up, kept across down/up
    300 requests, kill   ${load_s}s, 300/300 200, $retried after a redelivery ($vname restarted as $vid)
    stop                 ${stop_s}s, no SIGKILL
EOF
echo "compose-test passed" >&2
