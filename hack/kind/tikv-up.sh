#!/usr/bin/env bash
# Deploys the test subject (manifests/tikv: 1 PD, 3 TiKV in namespace tikv) and waits for it.
# The first run pulls pingcap/pd and pingcap/tikv (a few hundred MB). Without a Docker of the
# user's own (lib.sh), the stand-in images built here are loaded instead and hack/kind/standin/
# (manifests/tikv with only the images swapped) is applied.
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind kubectl
need_cluster
TIMEOUT=${TIMEOUT:-600s}

manifests="$REPO_ROOT/manifests/tikv"
if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ]; then
  for archive in $("$REPO_ROOT/hack/kind/standin.sh"); do
    log "loading $(basename "$archive") into the nodes"
    kind load image-archive "$archive" --name "$KIND_CLUSTER"
  done
  manifests="$REPO_ROOT/hack/kind/standin"
fi
log "applying ${manifests#"$REPO_ROOT"/}"
k apply -k "$manifests"
log "waiting for PD (timeout $TIMEOUT)"
k -n tikv rollout status statefulset/pd --timeout "$TIMEOUT"
log "waiting for TiKV (timeout $TIMEOUT)"
k -n tikv rollout status statefulset/tikv --timeout "$TIMEOUT"
k -n tikv get pods -o wide
log "stores as PD sees them (through the API server's proxy to the pd Service):"
k get --raw /api/v1/namespaces/tikv/services/pd:2379/proxy/pd/api/v1/stores \
  | grep -E '"(address|state_name)"' || log "(PD did not answer yet)"
log "TiKV is up; try: kubectl --context $KIND_CONTEXT apply -f manifests/examples/campaign.yaml"
