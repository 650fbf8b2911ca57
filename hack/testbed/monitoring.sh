#!/usr/bin/env bash
# Builds the test bed's alerting chain, Prometheus and Alertmanager, from their pinned Go
# modules (hack/testbed/{prometheus,alertmanager}/go.mod, versions in versions.env) into a
# cache outside the repo, and prints the directory that holds them. Only what is missing is
# built: a warm run costs nothing. The e2e tests that need them call this lazily
# (tests/e2e/monitoring.py) and start both as host processes on 127.0.0.1.
#
# Prometheus is built with `-tags remove_all_sd`, its documented build path for a binary with
# only the service discoveries it keeps by default (static, file, http): the test bed's targets
# are fixed loopback addresses, so the cloud SDs (AWS, Azure, GCE, Kubernetes, ... and their
# SDKs) are not compiled at all. Its web UI assets are not embedded (no `builtinassets` tag):
# the HTTP API, which the tests read, is all there is. Cold cost measured in docs/detection.md.
#
#   hack/testbed/monitoring.sh          build what is missing, print the bin dir
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
bin="$cache/bin/prometheus-${PROMETHEUS_VERSION}_alertmanager-${ALERTMANAGER_VERSION}"
logs="$cache/logs"
mkdir -p "$bin" "$logs"

export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOMAXPROCS=${GOMAXPROCS:-2}

log() { printf '[testbed-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build NAME MODULE_DIR PACKAGE TAGS LDFLAGS
build() {
  local name=$1 dir=$2 pkg=$3 tags=$4 ldflags=$5
  if [ -x "$bin/$name" ]; then
    return 0
  fi
  log "building $name ($pkg; go's output in $logs/build-$name.log)"
  local start=$SECONDS
  ( while sleep 30; do log "  ... $name still building, $((SECONDS - start))s elapsed"; done ) &
  local ticker=$!
  # shellcheck disable=SC2064
  trap "kill $ticker 2>/dev/null || true" RETURN
  if ! (cd "$dir" && nice -n 10 go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" \
        -o "$bin/$name.tmp" "$pkg") >"$logs/build-$name.log" 2>&1; then
    log "building $name failed; the last lines of $logs/build-$name.log:"
    tail -n 30 "$logs/build-$name.log" >&2
    return 1
  fi
  mv "$bin/$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - start))s"
}

# `prometheus --version` and Alertmanager's say which release they are.
version_flags() {
  local v=$1 semver=$2
  echo "-X github.com/prometheus/common/version.Version=$semver -X github.com/prometheus/common/version.Branch=$v"
}
# Module v0.316.0 is Prometheus 3.16.0; Alertmanager's module version is its release.
prom_release="3.$(echo "${PROMETHEUS_VERSION#v0.}" | sed 's/^\([0-9]\)\([0-9][0-9]\)\./\2./; s/^0//')"
build prometheus "$here/prometheus" github.com/prometheus/prometheus/cmd/prometheus remove_all_sd \
  "$(version_flags "$PROMETHEUS_VERSION" "$prom_release")"
build alertmanager "$here/alertmanager" github.com/prometheus/alertmanager/cmd/alertmanager "" \
  "$(version_flags "$ALERTMANAGER_VERSION" "${ALERTMANAGER_VERSION#v}")"
echo "$bin"
