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
export KWOK_WORKDIR="$state/kwok"

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() { "$here/build.sh"; }

answers() {
  [ -f "$kubeconfig" ] && "$1/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s \
    get --raw /readyz >/dev/null 2>&1
}

up() {
  local bin start=$SECONDS
  bin=$(bin_dir)
  export PATH="$bin:$PATH"   # kwokctl runs kubectl from PATH
  if answers "$bin"; then
    log "cluster '$name' already running"
  else
    if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
      # A cluster from an earlier boot (processes gone) or a half-made one: start over,
      # a test bed has nothing worth keeping.
      log "removing stale cluster state"
      kwokctl --name "$name" delete cluster >/dev/null 2>&1 || true
      rm -rf "$KWOK_WORKDIR/clusters/$name"
    fi
    mkdir -p "$state"
    rm -f "$kubeconfig"
    log "starting cluster '$name' (kwokctl, binary runtime, local binaries)"
    kwokctl --name "$name" create cluster \
      --runtime binary \
      --kubeconfig "$kubeconfig" \
      --etcd-binary "$bin/etcd" \
      --kube-apiserver-binary "$bin/kube-apiserver" \
      --kube-controller-manager-binary "$bin/kube-controller-manager" \
      --kube-scheduler-binary "$bin/kube-scheduler" \
      --kwok-controller-binary "$bin/kwok" \
      --kube-authorization=true \
      --kube-admission=true \
      --extra-args kube-controller-manager=enable-hostpath-provisioner=true \
      --kube-audit-policy "$here/manifests/audit-policy.yaml" \
      --wait 120s >&2
  fi
  local k=(kubectl --kubeconfig "$kubeconfig")
  "${k[@]}" apply -f "$here/manifests/nodes.yaml" -f "$here/manifests/storage.yaml" >/dev/null
  "${k[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null
  # The default ServiceAccount appears asynchronously; tests that create pods need it.
  for _ in $(seq 1 60); do
    "${k[@]}" -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  log "cluster ready in $((SECONDS - start))s: KUBECONFIG=$kubeconfig"
  echo "$kubeconfig"
}

down() {
  local bin
  bin=$(bin_dir)
  export PATH="$bin:$PATH"
  if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
    kwokctl --name "$name" delete cluster >&2 || true
  fi
  rm -rf "$KWOK_WORKDIR/clusters/$name" "$kubeconfig"
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
