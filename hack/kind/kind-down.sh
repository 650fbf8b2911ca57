#!/usr/bin/env bash
# Deletes the kind cluster "aftershock" and everything in it (TiKV data, the ledger). On the
# project's own dockerd (lib.sh), also stops that daemon and checks nothing of it is left.
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ] && ! docker info >/dev/null 2>&1; then
  log "the project's dockerd is not running: no kind cluster to delete"
  "$REPO_ROOT/hack/kind/docker.sh" down
  exit 0
fi
need docker kind
if cluster_exists; then
  log "deleting kind cluster '$KIND_CLUSTER'"
  kind delete cluster --name "$KIND_CLUSTER"
else
  log "no kind cluster '$KIND_CLUSTER'; nothing to do"
fi
if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ]; then
  others=$(kind get clusters 2>/dev/null || true)
  if [ -n "$others" ]; then
    log "the project's dockerd keeps running for the other kind clusters: $others"
  else
    "$REPO_ROOT/hack/kind/docker.sh" down
  fi
fi
