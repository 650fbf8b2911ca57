#!/usr/bin/env bash
# Builds the operator image (aftershock:dev) and loads it into the kind cluster's nodes.
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind
need_docker_daemon
need_cluster
IMAGE=${IMAGE:-aftershock:dev}

if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ]; then
  # The same Dockerfile, built offline (wheels from the host, --network none) by the test bed's
  # image builder, which also names it aftershock:dev, on the kind dockerd that runs anyway.
  [ "$IMAGE" = aftershock:dev ] || die "IMAGE must be aftershock:dev on the project's own dockerd"
  log "building $IMAGE offline (hack/testbed/images.sh operator)"
  archive=$(AFTERSHOCK_IMAGES_DOCKER_HOST=$DOCKER_HOST nice -n 19 "$REPO_ROOT/hack/testbed/images.sh" operator)
  log "loading $IMAGE into kind cluster '$KIND_CLUSTER'"
  kind load image-archive "$archive" --name "$KIND_CLUSTER"
else
  log "building $IMAGE"
  docker build -t "$IMAGE" "$REPO_ROOT"
  log "loading $IMAGE into kind cluster '$KIND_CLUSTER'"
  kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
fi
log "done; the Deployment uses imagePullPolicy IfNotPresent, so restart it to pick up a rebuilt image:"
log "  kubectl --context $KIND_CONTEXT -n aftershock-system rollout restart deployment/aftershock"
