#!/usr/bin/env bash
# Creates the kind cluster "aftershock" (1 control plane, 3 workers in 3 zones).
# Idempotent: an existing cluster is kept. Without a Docker of the user's own, it runs on the
# project's dockerd with the node image built here (lib.sh says how that is chosen).
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"

image_args=()
if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ]; then
  log "no Docker of your own: the project's dockerd and a node image built here (first build ~10 min)"
  nice -n 19 "$REPO_ROOT/hack/kind/node/build.sh" tools >/dev/null
  "$REPO_ROOT/hack/kind/docker.sh" up >/dev/null
  image_args=(--image "$("$REPO_ROOT/hack/kind/docker.sh" load)")
fi
need docker kind kubectl
need_docker_daemon

if cluster_exists; then
  log "kind cluster '$KIND_CLUSTER' already exists; keeping it"
else
  log "creating kind cluster '$KIND_CLUSTER' (a few minutes the first time: the node image is pulled)"
  kind create cluster --name "$KIND_CLUSTER" --config "$REPO_ROOT/hack/kind/kind-config.yaml" \
    "${image_args[@]}" --wait 300s
fi
k get nodes -L topology.kubernetes.io/zone
log "ready: kubectl context $KIND_CONTEXT"
