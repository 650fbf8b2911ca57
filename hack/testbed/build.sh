#!/usr/bin/env bash
# Builds the test bed's binaries from the pinned Go modules into a cache outside
# the repo and prints the directory that holds them. Only what is missing is
# built: a warm run costs nothing. A cold run takes 15-30 minutes on 2 cores,
# so every step says what it builds and a ticker shows elapsed time.
#
#   hack/testbed/build.sh            build what is missing, print the bin dir
#   AFTERSHOCK_CACHE=/x build.sh     use another cache root (default ~/.cache/aftershock)
#   hack/testbed/build.sh kind       also kubeadm and kube-proxy (the kind node image, hack/kind/node)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
mkdir -p "$bin"

# Builds must not touch the network for anything but the module proxy, and must
# not rewrite the committed go.mod/go.sum.
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# Linking kube-apiserver takes over 1 GB; two links at once on a small machine
# is where builds die, so the parallelism is the number of cores, at most 2.
export GOMAXPROCS=${GOMAXPROCS:-2}

log() { printf '[testbed-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# go's own output (hundreds of `go: downloading` lines on a cold cache) goes to a file per
# binary: the terminal shows progress lines only, and the file's name.
logs="$cache/logs"
mkdir -p "$logs"

# build NAME MODULE_DIR PACKAGE [LDFLAGS]
build() {
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$bin/$name" ]; then
    return 0
  fi
  log "building $name ($pkg; go's output in $logs/build-$name.log)"
  local start=$SECONDS
  ( while sleep 30; do log "  ... $name still building, $((SECONDS - start))s elapsed"; done ) &
  local ticker=$!
  # shellcheck disable=SC2064
  trap "kill $ticker 2>/dev/null || true" RETURN
  if ! (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg") \
      >"$logs/build-$name.log" 2>&1; then
    log "building $name failed; the last lines of $logs/build-$name.log:"
    tail -n 30 "$logs/build-$name.log" >&2
    return 1
  fi
  mv "$bin/$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - start))s"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
  k8s_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

# One build at a time (binaries are written to a .tmp name, then moved): `make test` may start
# the kind node image's build (which calls this with `kind`) beside its own call.
exec 9>"$cache/testbed-build.lock"
flock 9

total_start=$SECONDS
build etcd "$here/etcd" go.etcd.io/etcd/server/v3
build kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
build kwokctl "$here/kwok" sigs.k8s.io/kwok/cmd/kwokctl \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
k8s_tools=(kubectl kube-scheduler kube-controller-manager kube-apiserver kubelet)
[ "${1:-}" = kind ] && k8s_tools+=(kubeadm kube-proxy)
for t in "${k8s_tools[@]}"; do
  build "$t" "$here/k8s" "k8s.io/kubernetes/cmd/$t" "$k8s_ldflags"
done
if [ $((SECONDS - total_start)) -gt 1 ]; then
  log "all binaries ready in $bin ($((SECONDS - total_start))s)"
fi
echo "$bin"
