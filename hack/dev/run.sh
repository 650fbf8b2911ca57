#!/usr/bin/env bash
# `make dev`: everything needed to watch a Campaign run, on this machine, in one command.
#
#   1. the local test bed (hack/testbed/cluster.sh up: builds it on the first run)
#   2. the Campaign CRD (server-side) and the operator's Namespace, ServiceAccount and RBAC
#      (not its Deployment: no container runs on the simulated nodes)
#   3. the simulated TiKV (kubectl apply -k manifests/tikv; namespace tikv)
#   4. hack/dev/dev.py: the PD stand-in on 127.0.0.1, the operator as a local process
#      authenticated as its ServiceAccount, the example Campaign adapted for local use,
#      then `kubectl get campaigns -n tikv -w` until Ctrl-C
#
# Ctrl-C stops the operator and the PD stand-in; the cluster keeps running
# (make cluster-down removes it). Safe to run again: the previous dev Campaign is replaced.
#
#   AFTERSHOCK_DEV_MODE=local  the host-process mode (`make dev-local`); default: in-cluster on
#                             the real node when the cluster has one (hack/dev/incluster.py)
#   AFTERSHOCK_DEV_WAIT=1     no watch: wait for the Campaign to finish, print it and its
#                             report, stop, exit 0 when it is Ready (verdict Pass), else 1
#   AFTERSHOCK_DEV_TIMEOUT=S  how long AFTERSHOCK_DEV_WAIT waits (default 900)
#   AFTERSHOCK_DEV_DETACH=1   in-cluster mode only: deploy, start the Campaign and return at
#                             once (CI runs `make test` beside it this way)
#   AFTERSHOCK_DEV_LIVENESS_PORT=P  the operator's /healthz port (default 8080)
#   AFTERSHOCK_DEV_METRICS_PORT=P   its /metrics and /campaigns port (default 9090)
#                             (0 turns either off; a port already taken falls back to 0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
dev_dir="$cache/dev"
python=${AFTERSHOCK_DEV_PYTHON:-$repo/.venv/bin/python}
mkdir -p "$dev_dir"

log() { printf '[dev %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The first run builds a lot (Go modules, images): the terminal shows the progress lines
# ("[testbed-build ...]", "[images ...]", ...) and the full output goes to one file.
full_log="$dev_dir/make-dev.log"
: >"$full_log"
quietly() {
  local rc=0
  "$@" >>"$full_log" 2> >(tee -a "$full_log" | grep --line-buffered '^\[' >&2) || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "failed ($*): the last lines of $full_log:"
    tail -n 30 "$full_log" >&2
    exit "$rc"
  fi
}

# dev.py stops what it starts (try/finally). This is the net under it: should it die without
# cleaning up, the operator it started (by the pid it recorded) is stopped here.
pidfile="$dev_dir/operator.pid"
cleanup() {
  local pid
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && grep -q aftershock "/proc/$pid/cmdline" 2>/dev/null; then
      log "stopping the operator left behind (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 45); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
}
trap cleanup EXIT
# Ctrl-C reaches dev.py too, which stops what it started and exits 0: a clean stop is not an
# error. (A no-op trap, not an ignored signal: children would inherit an ignored SIGINT.)
trap ':' INT
trap 'exit 143' TERM

[ -x "$python" ] || { echo "no Python environment at $python: run 'make venv' (make dev does)" >&2; exit 1; }

log "local cluster (the first run builds Kubernetes from Go modules: 10-25 min on 2 cores)"
log "progress lines only here; everything in $full_log"
quietly "$repo/hack/testbed/cluster.sh" up
eval "$("$repo/hack/testbed/cluster.sh" env)"   # KUBECONFIG, PATH with kubectl
export KUBECONFIG PATH

# In-cluster on the real node when the cluster has it; otherwise (or with
# AFTERSHOCK_DEV_MODE=local, `make dev-local`) the fast host-process mode.
mode=${AFTERSHOCK_DEV_MODE:-auto}
if [ "$mode" = auto ]; then
  if kubectl get node real-0 >/dev/null 2>&1; then
    mode=in-cluster
  else
    log "no real node in this cluster ($("$repo/hack/testbed/realnode.sh" can || true)): host-process mode"
    mode=local
  fi
fi
cd "$repo"

if [ "${AFTERSHOCK_DEV_DETACH:-}" = 1 ] && [ "$mode" != in-cluster ]; then
  log "AFTERSHOCK_DEV_DETACH=1 needs the in-cluster mode (the real node): the host-process operator would stop"
  exit 1
fi

if [ "$mode" = in-cluster ]; then
  log "images: the operator from the Dockerfile, subject images (cached in $cache/images)"
  quietly "$repo/hack/testbed/images.sh" all
  rc=0
  "$python" "$here/incluster.py" || rc=$?
  exit "$rc"
fi

log "CRD, operator namespace, ServiceAccount and RBAC"
kubectl apply --server-side --force-conflicts \
  -f "$repo/manifests/crd/campaigns.aftershock.dev.yaml" >/dev/null
kubectl wait --for=condition=Established crd/campaigns.aftershock.dev --timeout=60s >/dev/null
for f in namespace serviceaccount rbac; do
  kubectl apply -f "$repo/manifests/operator/$f.yaml" >/dev/null
done
# Records each Campaign's author, which the operator checks before a run (ADR 0012).
kubectl apply -f "$repo/manifests/admission/author.yaml" >/dev/null
# Never two operators on one Campaign: the in-cluster one of `make dev` goes.
if kubectl get deployment aftershock -n aftershock-system >/dev/null 2>&1; then
  log "removing the in-cluster operator (deployment aftershock-system/aftershock)"
  kubectl delete deployment aftershock -n aftershock-system --wait=true >/dev/null
fi
# The real-node TiKV stand-ins of `make dev` are replaced by kwok-simulated pods.
if kubectl get statefulset tikv -n tikv -o jsonpath='{.spec.template.spec.nodeSelector}' 2>/dev/null \
    | grep -q real-node; then
  kubectl delete statefulset tikv -n tikv --wait=true >/dev/null
  kubectl delete deployment pd -n tikv --ignore-not-found >/dev/null
fi

log "simulated TiKV (manifests/tikv: PD + 3 TiKV StatefulSets on kwok nodes)"
kubectl apply -k "$repo/manifests/tikv" >/dev/null
kubectl rollout status statefulset/tikv -n tikv --timeout=180s >/dev/null

# Not exec: the EXIT trap above must outlive dev.py.
rc=0
"$python" "$here/dev.py" || rc=$?
exit "$rc"
