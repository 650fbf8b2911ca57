#!/usr/bin/env bash
# Builds the operator image (aftershock:dev) and loads it into the kind cluster's nodes.
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind
need_docker_daemon
need_cluster
IMAGE=${IMAGE:-aftershock:dev}

log "building $IMAGE"
docker build -t "$IMAGE" "$REPO_ROOT"
log "loading $IMAGE into kind cluster '$KIND_CLUSTER'"
kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
log "done; the Deployment uses imagePullPolicy IfNotPresent, so restart it to pick up a rebuilt image:"
log "  kubectl --context $KIND_CONTEXT -n aftershock-system rollout restart deployment/aftershock"
