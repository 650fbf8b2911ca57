# Shared by the hack/kind scripts (sourced, not run).
# shellcheck shell=bash

KIND_CLUSTER=${KIND_CLUSTER:-aftershock}
KIND_CONTEXT="kind-${KIND_CLUSTER}"
# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need TOOL... : fail naming every missing tool, with where to get it.
need() {
  local missing=() t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    for t in "${missing[@]}"; do
      case $t in
        docker) log "missing: docker (https://docs.docker.com/engine/install/)" ;;
        kind) log "missing: kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" ;;
        kubectl) log "missing: kubectl (https://kubernetes.io/docs/tasks/tools/)" ;;
        *) log "missing: $t" ;;
      esac
    done
    die "install the missing tools above and try again"
  fi
}

need_docker_daemon() {
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is it running? may you use it?)"
}

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"
}

need_cluster() {
  cluster_exists || die "no kind cluster '$KIND_CLUSTER': run hack/kind/kind-up.sh (make kind-up) first"
}

# kubectl against the kind cluster, whatever the current context is.
k() { kubectl --context "$KIND_CONTEXT" "$@"; }
