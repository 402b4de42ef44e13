#!/usr/bin/env bash
# The compose cluster (deploy/compose.yaml) under faults, end to end:
#   build the images, make the certificates with `autoglm tls`, bring the
#   cluster up, initialize it, run a DAG; then, under a submission load:
#   `docker kill` the leader's container (and start it again), cut a
#   follower off with `docker network disconnect` and reconnect it, restart
#   every replica one at a time; then bring it down.
# Fails on a lost task (an acknowledged task missing or not succeeded), a
# submission that failed after the client's retries, or replicas whose state
# digests differ once they have applied the same log.
#
#   deploy/compose-test.sh [--no-build] [--load-seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
cut_seconds=8
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --cut-seconds) cut_seconds=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--cut-seconds N]" >&2; exit 2 ;;
  esac
  shift
done
started=$(date +%s)
step() { printf '[%4ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() { step "FAIL: $*"; exit 1; }

((build)) && deploy/build-images.sh
version=$(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)
export AUTOGLM_VERSION=$version
cli_bin=target/x86_64-unknown-linux-gnu/release/autoglm
work=$(mktemp -d /tmp/autoglm-compose.XXXXXX)
project=autoglm-test-$$
export AUTOGLM_PKI=$work/pki
compose() { docker-compose -p "$project" -f deploy/compose.yaml "$@"; }
# The CLI container, one command per run; --timeout bounds its retries.
cli() { compose run --rm -T cli --timeout 30 "$@"; }
container() { echo "${project}_$1_1"; }
network=${project}_autoglm

cleanup() {
  local code=$?
  [[ -n ${load_pids:-} ]] && kill $load_pids 2>/dev/null || true
  if ((code != 0)); then
    step "logs of every container:"
    compose logs --no-color --tail 40 2>&1 | sed 's/^/    /' || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $code
}
trap cleanup EXIT
# Any other failing command names itself.
trap 'step "FAIL: line $LINENO: $BASH_COMMAND"' ERR

step "certificates under $AUTOGLM_PKI (autoglm tls)"
"$cli_bin" tls ca create --cluster autoglm --dir "$AUTOGLM_PKI" >/dev/null
for i in 1 2 3; do
  "$cli_bin" tls cert create --replica $i --host replica$i --ca-dir "$AUTOGLM_PKI" >/dev/null
done
for node in sim-1 sim-2; do
  "$cli_bin" tls cert create --agent $node --ca-dir "$AUTOGLM_PKI" >/dev/null
done
"$cli_bin" tls cert create --user admin --role admin --ca-dir "$AUTOGLM_PKI" >/dev/null
# The containers run as the autoglm user (uid 10001); keys stay 0600.
chown -R 10001:10001 "$AUTOGLM_PKI"

step "up: 3 replicas, 2 sim agents"
compose up -d --quiet-pull 2>&1 | sed 's/^/    /'

step "cluster init"
for try in $(seq 1 30); do
  if cli cluster init --member 1=replica1:7000,2=replica2:7000,3=replica3:7000 >/dev/null 2>"$work/init.err"; then
    break
  fi
  ((try < 30)) || fail "cluster init: $(cat "$work/init.err")"
  sleep 1
done

# JSON helpers (python3: the CLI's --json output).
status_json() { cli cluster status --json; }
leader_of() { python3 -c 'import json,sys; s=json.load(sys.stdin); print(next(m["leader_id"] for m in s if "leader_id" in m and m.get("role")=="leader"))'; }
leader() {
  for _ in $(seq 1 30); do
    if id=$(status_json 2>/dev/null | leader_of 2>/dev/null) && [[ -n $id ]]; then echo "$id"; return; fi
    sleep 1
  done
  fail "no leader"
}

step "waiting for both agents"
for try in $(seq 1 60); do
  n=$(cli nodes list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  ((n >= 2)) && break
  ((try < 60)) || fail "agents did not register"
  sleep 1
done

step "DAG: prepare, 8 inferences, aggregate (--wait)"
# --wait exits 5 unless every task succeeded.
cli submit -f /etc/autoglm/jobs/dag.yaml --wait 2>/dev/null | tail -2 | sed 's/^/    /'

# The load: single sim tasks from two CLI containers at a time, each
# acknowledged task id recorded; a submission that fails after the client's
# retries is recorded too.
load() {
  local worker=$1 i=0
  while [[ ! -e $work/stop ]]; do
    i=$((i + 1))
    if out=$(cli submit --name "load-$worker-$i" --sim-ms 50 --gpus 1 --gpu-memory-mb 1000 --json 2>"$work/err.$worker"); then
      echo "$out" | python3 -c 'import json,sys; [print(t) for t in json.load(sys.stdin)["task_ids"].values()]' >>"$work/acked.$worker"
    else
      echo "load-$worker-$i: $(grep -v '^Creating' "$work/err.$worker" | tail -1)" >>"$work/failed"
    fi
  done
}
load 1 & load_pids=$!
load 2 & load_pids="$load_pids $!"
acked() { cat "$work"/acked.* 2>/dev/null | wc -l || true; }
wait_acked() { # at least $1 more acknowledged submissions
  local want=$(($(acked) + $1))
  for _ in $(seq 1 120); do (($(acked) >= want)) && return; sleep 0.5; done
  fail "the load stalled at $(acked) acknowledged submissions"
}
wait_acked 4

old=$(leader)
step "docker kill the leader, replica$old"
docker kill "$(container replica$old)" >/dev/null
for _ in $(seq 1 30); do
  new=$(leader)
  [[ $new != "$old" ]] && break
  sleep 1
done
[[ $new != "$old" ]] || fail "no new leader after killing replica$old"
step "new leader: replica$new; starting replica$old again"
compose start "replica$old" >/dev/null 2>&1
wait_acked 4

lead=$(leader)
follower=$(( lead % 3 + 1 ))
step "cut replica$follower (a follower) off the network for ${cut_seconds}s"
docker network disconnect "$network" "$(container replica$follower)"
wait_acked 4
sleep "$cut_seconds"
docker network connect --alias "replica$follower" "$network" "$(container replica$follower)"
step "reconnected replica$follower"
wait_acked 4

# Replica $1 answers and has applied what the leader had committed when asked.
wait_caught_up() {
  local verdict
  for _ in $(seq 1 60); do
    verdict=$(status_json 2>/dev/null | python3 -c '
import json,sys
s={str(m["id"]): m for m in json.load(sys.stdin)}
lead=next((m for m in s.values() if m.get("role")=="leader"), None)
me=s.get(sys.argv[1], {})
print("yes" if lead and "applied_index" in me and me["applied_index"] >= lead["committed_index"] else "no")' "$1" || echo no)
    [[ $verdict == yes ]] && return
    sleep 0.5
  done
  fail "replica$1 did not catch up"
}
wait_caught_up "$follower"

for i in 1 2 3; do
  step "restart replica$i (SIGTERM: a leader hands over first)"
  compose restart "replica$i" >/dev/null 2>&1
  wait_caught_up "$i"
  wait_acked 4
done

touch "$work/stop"
for pid in $load_pids; do wait "$pid" || fail "a load worker failed"; done
load_pids=
total=$(acked)
failed=0
[[ -f $work/failed ]] && failed=$(wc -l <"$work/failed")
step "load stopped: $total submissions acknowledged, $failed failed"
((failed == 0)) || { cat "$work/failed"; fail "$failed submissions failed after retries"; }

step "every acknowledged task ends succeeded"
cat "$work"/acked.* >"$work/acked-tasks"
for try in $(seq 1 60); do
  : >"$work/tasks"
  token=""
  while :; do
    page=$(cli task list --json --limit 1000 ${token:+--page-token "$token"})
    echo "$page" | python3 -c 'import json,sys; [print(t["id"], t["state"]) for t in json.load(sys.stdin)["tasks"]]' >>"$work/tasks"
    token=$(echo "$page" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("next_page_token") or "")')
    [[ -z $token ]] && break
  done
  missing=$(python3 - "$work/acked-tasks" "$work/tasks" <<'PY'
import sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
states = dict(l.split() for l in open(sys.argv[2]) if l.strip())
lost = [t for t in acked if t not in states]
pending = [t for t in acked if states.get(t) not in (None, "succeeded")]
print(len(lost), len(pending), ",".join(lost[:5]))
PY
)
  read -r lost pending examples <<<"$missing"
  ((lost > 0)) && fail "$lost acknowledged tasks are lost (e.g. $examples)"
  ((pending == 0)) && break
  ((try < 60)) || fail "$pending acknowledged tasks never succeeded"
  sleep 1
done
step "all $(wc -l <"$work/acked-tasks") acknowledged load tasks succeeded; none lost"

step "state digests once every replica applied the same log"
for try in $(seq 1 30); do
  verdict=$(status_json | python3 -c '
import json,sys
s=json.load(sys.stdin)
ok=[m for m in s if "state_digest" in m]
applied={m["applied_index"] for m in ok}; digests={m["state_digest"] for m in ok}
print("equal" if len(ok)==3 and len(applied)==1 and len(digests)==1 else "wait", " ".join("%s@%s=%s" % (m["id"], m["applied_index"], m["state_digest"]) for m in ok))')
  [[ $verdict == equal* ]] && break
  ((try < 30)) || fail "digests differ or replicas never converged: $verdict"
  sleep 1
done
step "digests equal: ${verdict#equal }"

step "down"
compose down -v >/dev/null 2>&1
step "PASS: compose cluster, $total load submissions + 1 DAG, leader killed, follower cut, rolling restart"
