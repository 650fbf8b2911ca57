# Shared by the hack/kind scripts (sourced, not run).
# shellcheck shell=bash

KIND_CLUSTER=${KIND_CLUSTER:-aftershock}
KIND_CONTEXT="kind-${KIND_CLUSTER}"
# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Where kind runs. With a Docker of the user's own (DOCKER_HOST set, or `docker info` answers):
# there, with kind's published node image and pingcap's images, as any kind user runs it.
# Without one (this project's machines and CI, where no image can be pulled): on the project's
# own dockerd (hack/kind/docker.sh) with the node image and stand-in images built here
# (hack/kind/node/build.sh, hack/kind/standin.sh; docs/adr/0014-kind-node-image.md), and the kind
# and kubectl binaries built from the pinned Go modules. AFTERSHOCK_KIND_LOCAL=1/0 forces either.
if [ -z "${AFTERSHOCK_KIND_LOCAL:-}" ]; then
  if [ -n "${DOCKER_HOST:-}" ] || { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }; then
    AFTERSHOCK_KIND_LOCAL=0
  else
    AFTERSHOCK_KIND_LOCAL=1
  fi
fi
if [ "$AFTERSHOCK_KIND_LOCAL" = 1 ]; then
  eval "$("$REPO_ROOT/hack/kind/docker.sh" env)"
  # shellcheck disable=SC2046 # two folders, no spaces
  PATH="$(printf '%s:' $("$REPO_ROOT/hack/kind/node/build.sh" bins))$PATH"
fi
export AFTERSHOCK_KIND_LOCAL

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
