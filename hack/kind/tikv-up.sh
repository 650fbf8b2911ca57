#!/usr/bin/env bash
# Deploys the test subject (manifests/tikv: 1 PD, 3 TiKV in namespace tikv) and waits for it.
# The first run pulls pingcap/pd and pingcap/tikv (a few hundred MB).
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind kubectl
need_cluster
TIMEOUT=${TIMEOUT:-600s}

log "applying manifests/tikv"
k apply -k "$REPO_ROOT/manifests/tikv"
log "waiting for PD (timeout $TIMEOUT)"
k -n tikv rollout status statefulset/pd --timeout "$TIMEOUT"
log "waiting for TiKV (timeout $TIMEOUT)"
k -n tikv rollout status statefulset/tikv --timeout "$TIMEOUT"
k -n tikv get pods -o wide
log "stores as PD sees them:"
k -n tikv exec pd-0 -- /pd-ctl -u http://127.0.0.1:2379 store 2>/dev/null \
  | grep -E '"(address|state_name)"' || log "(pd-ctl not available in the PD image; skipped)"
log "TiKV is up; try: kubectl --context $KIND_CONTEXT apply -f manifests/examples/campaign.yaml"
