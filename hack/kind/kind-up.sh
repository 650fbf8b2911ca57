#!/usr/bin/env bash
# Creates the kind cluster "aftershock" (1 control plane, 3 workers in 3 zones).
# Idempotent: an existing cluster is kept.
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind kubectl
need_docker_daemon

if cluster_exists; then
  log "kind cluster '$KIND_CLUSTER' already exists; keeping it"
else
  log "creating kind cluster '$KIND_CLUSTER' (a few minutes the first time: the node image is pulled)"
  kind create cluster --name "$KIND_CLUSTER" --config "$REPO_ROOT/hack/kind/kind-config.yaml" --wait 180s
fi
k get nodes -L topology.kubernetes.io/zone
log "ready: kubectl context $KIND_CONTEXT"
