#!/usr/bin/env bash
# Builds a slim CoreDNS (only the plugins a cluster's DNS uses: mod/main.go says which and why)
# from the pinned Go module, caches it under ~/.cache/aftershock (AFTERSHOCK_CACHE), and prints
# the binary's path. A warm call costs nothing; concurrent calls wait for one build (flock).
#
#   hack/coredns/build.sh             build if missing, print /path/to/coredns
#   "$(hack/coredns/build.sh)" -conf Corefile
#
# Shared by the kind node image (hack/kind/node/build.sh) and the test bed's cluster DNS.
# Cold (empty Go build and module caches) on 2 busy cores: see docs/adr/0014-kind-node-image.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/mod/go.mod")
[ -n "$version" ] || { echo "hack/coredns/mod/go.mod names no github.com/coredns/coredns version" >&2; exit 1; }
# The binary's folder names the version and a digest of what it is built from (plugin list, pins).
key=$(cat "$here/mod/main.go" "$here/mod/go.mod" "$here/mod/go.sum" "$0" | sha256sum | cut -c1-12)
bin="$cache/bin/coredns-${version}-${key}"
if [ -x "$bin/coredns" ]; then echo "$bin/coredns"; exit 0; fi

log() { printf '[coredns-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$bin" "$cache/logs"
exec 9>"$bin/.lock"
flock 9
if [ ! -x "$bin/coredns" ]; then
  export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOMAXPROCS=${GOMAXPROCS:-2}
  buildlog="$cache/logs/build-coredns.log"
  log "building CoreDNS ${version} (slim: hack/coredns/mod/main.go; go's output in $buildlog)"
  start=$SECONDS
  # coremain.GitCommit is what `coredns -version` prints beside the version.
  if ! (cd "$here/mod" && go build -trimpath \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=aftershock-slim" \
        -o "$bin/coredns.tmp" .) >"$buildlog" 2>&1; then
    log "building CoreDNS failed; the last lines of $buildlog:"
    tail -n 30 "$buildlog" >&2
    exit 1
  fi
  mv "$bin/coredns.tmp" "$bin/coredns"
  log "built CoreDNS in $((SECONDS - start))s"
fi
echo "$bin/coredns"
