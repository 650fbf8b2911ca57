#!/usr/bin/env bash
# The local test bed: a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, all built from Go modules) with kwok
# simulating three nodes. Started by kwokctl's binary runtime with local binaries
# only (nothing is downloaded).
#
#   hack/testbed/cluster.sh up      build if needed, start (idempotent), print kubeconfig path
#   hack/testbed/cluster.sh down    stop and delete the cluster
#   hack/testbed/cluster.sh status  exit 0 when the cluster answers
#   hack/testbed/cluster.sh env     print shell exports (KUBECONFIG, PATH with kubectl)
#   hack/testbed/cluster.sh audit-log  print the path of the API server's audit log
#   AFTERSHOCK_CLUSTER_NAME=x ...   another, independent cluster (state in ~/.cache/aftershock/clusters/x)
#   A running cluster whose configuration (the create flags below, manifests/kwokctl.yaml, the
#   audit policy) differs from the one it was made with is made again by `up`, unless
#   AFTERSHOCK_KEEP_CLUSTER=1: a cluster shared by several checkouts is kept as it runs (with a
#   warning), so that an older checkout's tests do not remake it under a newer one's.
#   AFTERSHOCK_REAL_NODE=auto|1|0   the real node (realnode.sh: containerd + kubelet, node real-0)
#                                   beside the kwok nodes. auto (default): on for the default
#                                   cluster when this machine can host it (root, Debian), with the
#                                   reason printed when it cannot; 1: required; 0: off. Another
#                                   cluster's node (AFTERSHOCK_REAL_NODE=1 with a name) is a second
#                                   instance with its own containerd, kubelet, bridge and cgroups
#                                   (realnode.sh, AFTERSHOCK_REAL_NODE_INSTANCE=<cluster name>).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
name=${AFTERSHOCK_CLUSTER_NAME:-aftershock}
# The default cluster keeps the documented kubeconfig path; other names (e.g. the reliability
# suite's own cluster, whose API server and etcd it restarts) live beside it.
if [ "$name" = aftershock ]; then
  state="$cache/cluster"
else
  state="$cache/clusters/$name"
fi
kubeconfig="$state/kubeconfig"
# Another cluster's real node is an instance of its own (realnode.sh), named after the cluster.
if [ "$name" != aftershock ]; then export AFTERSHOCK_REAL_NODE_INSTANCE="$name"; fi
# Whether this cluster's real node has state to remove (the default's: always try).
node_made() { [ "$name" = aftershock ] || [ -d "$("$here/realnode.sh" state-dir)" ]; }
export KWOK_WORKDIR="$state/kwok"

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() { "$here/build.sh"; }

answers() {
  [ -f "$kubeconfig" ] && "$1/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s \
    get --raw /readyz >/dev/null 2>&1
}

# How the cluster is made: kwokctl's flags (every extra component flag is in kwokctl.yaml).
create_args() {
  printf '%s\n' \
    --runtime binary \
    --kubeconfig "$kubeconfig" \
    --etcd-binary "$1/etcd" \
    --kube-apiserver-binary "$1/kube-apiserver" \
    --kube-controller-manager-binary "$1/kube-controller-manager" \
    --kube-scheduler-binary "$1/kube-scheduler" \
    --kwok-controller-binary "$1/kwok" \
    --kube-authorization=true \
    --kube-admission=true \
    --kube-audit-policy "$here/manifests/audit-policy.yaml" \
    --wait 120s
}

# A digest of everything the cluster is made from: a change to any of it makes it again.
config_digest() {
  { create_args "$1"; cat "$here/manifests/kwokctl.yaml" "$here/manifests/audit-policy.yaml"; } |
    sha256sum | cut -d' ' -f1
}

up() {
  local bin start=$SECONDS digest made=""
  bin=$(bin_dir)
  export PATH="$bin:$PATH"   # kwokctl runs kubectl from PATH
  digest=$(config_digest "$bin")
  [ -f "$state/config.sha256" ] && made=$(cat "$state/config.sha256")
  if answers "$bin" && { [ "$made" = "$digest" ] || [ "${AFTERSHOCK_KEEP_CLUSTER:-}" = 1 ]; }; then
    if [ "$made" = "$digest" ]; then
      log "cluster '$name' already running"
    else
      log "cluster '$name' runs with another configuration than this checkout's; kept" \
        "(AFTERSHOCK_KEEP_CLUSTER=1): 'cluster.sh down' then 'up' applies this one"
    fi
  else
    if answers "$bin"; then log "cluster '$name' runs with another configuration: making it again"; fi
    if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
      # A cluster from an earlier boot (processes gone), a half-made one or one made from
      # another configuration: start over, a test bed has nothing worth keeping.
      log "removing the cluster's old state"
      kwokctl --name "$name" delete cluster >/dev/null 2>&1 || true
      rm -rf "$KWOK_WORKDIR/clusters/$name"
    fi
    mkdir -p "$state"
    rm -f "$kubeconfig" "$state/config.sha256"
    # A new cluster has a new CA: a kubelet of an earlier one cannot join it.
    if node_made; then "$here/realnode.sh" down 2>/dev/null || true; fi
    log "starting cluster '$name' (kwokctl, binary runtime, local binaries)"
    local args
    mapfile -t args < <(create_args "$bin")
    kwokctl --config "$here/manifests/kwokctl.yaml" --name "$name" create cluster "${args[@]}" >&2
    echo "$digest" > "$state/config.sha256"
  fi
  local k=(kubectl --kubeconfig "$kubeconfig")
  "${k[@]}" apply -f "$here/manifests/nodes.yaml" -f "$here/manifests/storage.yaml" >/dev/null
  "${k[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null
  # The default ServiceAccount appears asynchronously; tests that create pods need it.
  for _ in $(seq 1 60); do
    "${k[@]}" -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  if want_real_node; then
    "$here/realnode.sh" up "$kubeconfig" "$KWOK_WORKDIR/clusters/$name/pki"
  fi
  log "cluster ready in $((SECONDS - start))s: KUBECONFIG=$kubeconfig"
  echo "$kubeconfig"
}

# Whether this cluster gets the real node; says why not when it was wanted.
want_real_node() {
  local mode=${AFTERSHOCK_REAL_NODE:-auto} why
  [ "$mode" != 0 ] || return 1
  if [ "$mode" = auto ] && [ "$name" != aftershock ]; then return 1; fi
  if why=$("$here/realnode.sh" can); then return 0; fi
  if [ "$mode" = 1 ]; then
    log "the real node was required (AFTERSHOCK_REAL_NODE=1) but cannot run here: $why"
    exit 1
  fi
  log "no real node: $why (kwok nodes only; real-node tests are deselected)"
  return 1
}

down() {
  local bin
  bin=$(bin_dir)
  export PATH="$bin:$PATH"
  if node_made; then
    "$here/realnode.sh" down
  fi
  if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
    kwokctl --name "$name" delete cluster >&2 || true
  fi
  rm -rf "$KWOK_WORKDIR/clusters/$name" "$kubeconfig" "$state/config.sha256"
  log "cluster '$name' removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) answers "$(bin_dir)" ;;
  audit-log) echo "$KWOK_WORKDIR/clusters/$name/logs/audit.log" ;;
  env)
    bin=$(bin_dir)
    echo "export KUBECONFIG=$kubeconfig"
    echo "export PATH=$bin:\$PATH"
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
