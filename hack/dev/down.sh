#!/usr/bin/env bash
# `make dev-down`: remove what `make dev` deployed; the cluster (and the ledger's volume
# claim, so results survive) stay. `make cluster-down` removes everything.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
eval "$("$repo/hack/testbed/cluster.sh" env)"
export KUBECONFIG PATH
kubectl -n tikv patch campaign tikv-node-kill --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
kubectl delete namespace tikv --ignore-not-found --wait=false
kubectl delete deployment aftershock -n aftershock-system --ignore-not-found
echo "removed the dev Campaign, the TiKV stand-ins and the operator Deployment (PVC aftershock-ledger kept)"
