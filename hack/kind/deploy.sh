#!/usr/bin/env bash
# Deploys the operator (kubectl apply -k manifests/: CRD, RBAC, PVC, Deployment) and waits
# for it. Build and load the image first (hack/kind/image.sh).
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind kubectl
need_cluster
TIMEOUT=${TIMEOUT:-180s}

log "applying the CRD first and waiting until it is served"
k apply --server-side -f "$REPO_ROOT/manifests/crd/campaigns.aftershock.dev.yaml"
k wait --for condition=Established --timeout 60s crd/campaigns.aftershock.dev
log "applying manifests/"
k apply --server-side -k "$REPO_ROOT/manifests"
log "waiting for the operator (timeout $TIMEOUT)"
if ! k -n aftershock-system rollout status deployment/aftershock --timeout "$TIMEOUT"; then
  k -n aftershock-system get pods -o wide >&2 || true
  k -n aftershock-system logs deployment/aftershock --tail 50 >&2 || true
  die "the operator did not become available (image not loaded? run hack/kind/image.sh)"
fi
log "operator running; watch Campaigns with: kubectl --context $KIND_CONTEXT get camp -A -o wide"
