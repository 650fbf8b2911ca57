#!/usr/bin/env bash
# Builds the kstatus probe (main.go: sigs.k8s.io/cli-utils/pkg/kstatus/status, what Flux
# uses to judge health) from the pinned modules in this directory (go.mod/go.sum, only the
# Go module proxy) into a cache outside the repo, and prints the binary's path. A warm run
# costs nothing; a cold one compiles apimachinery (under a minute on 2 cores).
#
#   hack/tools/kstatus/build.sh              build if missing, print the binary's path
#   AFTERSHOCK_CACHE=/x build.sh             another cache root (default ~/.cache/aftershock)
#
# To move to another cli-utils: in this directory
#   GOFLAGS=-mod=mod go get sigs.k8s.io/cli-utils@VERSION && GOFLAGS=-mod=mod go mod tidy
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
log() { printf '[kstatus-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || { log "error: missing: go (1.26+)"; exit 1; }
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH

pinned=$(sed -n 's/^\tsigs.k8s.io\/cli-utils \(v[^ ]*\).*/\1/p' "$here/go.mod")
[ -n "$pinned" ] || { log "error: go.mod pins no sigs.k8s.io/cli-utils"; exit 1; }
# The source is part of the key: a changed main.go or go.sum builds a new binary.
key=$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
bin="$cache/bin/kstatus-cli-utils-${pinned}-${key}"

if [ -x "$bin/kstatus" ]; then
  echo "$bin/kstatus"
  exit 0
fi
mkdir -p "$bin"
# One build at a time (parallel test workers may ask at once: see hack/tools/helm/build.sh).
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/kstatus" ]; then
  echo "$bin/kstatus"
  exit 0
fi

export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOMAXPROCS=${GOMAXPROCS:-2}

log "building the kstatus probe (cli-utils $pinned) into $bin"
start=$SECONDS
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$bin/kstatus.tmp" .)
mv "$bin/kstatus.tmp" "$bin/kstatus"
log "built in $((SECONDS - start))s"
echo "$bin/kstatus"
