#!/usr/bin/env bash
# Builds helm from the pinned module in this directory (go.mod/go.sum; no helm download
# from the internet, only the Go module proxy) into a cache outside the repo, and prints
# the path of the binary. A warm run costs nothing. A cold run compiles ~1,000 packages
# (helm pulls in client-go and kubectl): several minutes on 2 cores; a ticker shows progress.
#
#   hack/tools/helm/build.sh              build if missing, print the binary's path
#   AFTERSHOCK_CACHE=/x build.sh          another cache root (default ~/.cache/aftershock)
#
# To move to another helm: edit HELM_VERSION, then in this directory
#   GOFLAGS=-mod=mod go get -tool helm.sh/helm/v3/cmd/helm@$HELM_VERSION && go mod tidy
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION=v3.21.4

cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
bin="$cache/bin/helm-${HELM_VERSION}"
log() { printf '[helm-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || { log "error: missing: go (1.26+)"; exit 1; }
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH

pinned=$(sed -n 's/^\thelm.sh\/helm\/v3 \(v[^ ]*\).*/\1/p' "$here/go.mod")
[ "$pinned" = "$HELM_VERSION" ] || { log "error: go.mod pins helm $pinned, this script says $HELM_VERSION"; exit 1; }

if [ -x "$bin/helm" ]; then
  echo "$bin/helm"
  exit 0
fi
mkdir -p "$bin"
# One build at a time: `make test`'s workers ask for helm at once (test_chart, test_helm,
# test_pod_security), and on a cold cache each started its own build; the first to finish
# moved the shared helm.tmp away under the others ("mv: cannot stat"). The others wait here and
# find the binary built.
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/helm" ]; then
  echo "$bin/helm"
  exit 0
fi

export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOMAXPROCS=${GOMAXPROCS:-2}

log "building helm $HELM_VERSION into $bin (cold: several minutes)"
start=$SECONDS
( while sleep 30; do log "  ... still building, $((SECONDS - start))s elapsed"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
(cd "$here" && go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm)
mv "$bin/helm.tmp" "$bin/helm"
log "built helm $HELM_VERSION in $((SECONDS - start))s"
echo "$bin/helm"
