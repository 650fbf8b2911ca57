#!/usr/bin/env bash
# Deletes the kind cluster "aftershock" and everything in it (TiKV data, the ledger).
set -euo pipefail
# shellcheck source=hack/kind/lib.sh
. "$(dirname "$0")/lib.sh"
need docker kind

if cluster_exists; then
  log "deleting kind cluster '$KIND_CLUSTER'"
  kind delete cluster --name "$KIND_CLUSTER"
else
  log "no kind cluster '$KIND_CLUSTER'; nothing to do"
fi
