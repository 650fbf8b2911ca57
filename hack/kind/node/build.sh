#!/usr/bin/env bash
# Builds a kind node image here, with no registry: everything in it comes from Debian packages,
# the Go module proxy and this repository (recipe and reasons: docs/adr/0014-kind-node-image.md).
#
#   hack/kind/node/build.sh tools    kind, crictl, local-path-provisioner binaries; prints their dir
#                                    (CoreDNS: hack/coredns/build.sh)
#   hack/kind/node/build.sh images   the images the node preloads (control plane, etcd, coredns, pause,
#                                    kube-proxy, CNI agent, local-path); prints the archives
#   hack/kind/node/build.sh bins     the two folders the binaries go to (builds nothing)
#   hack/kind/node/build.sh node     the node root filesystem with those images in its containerd;
#                                    prints the folder (docker import it: hack/kind/docker.sh)
#
# Everything is cached under ~/.cache/aftershock (AFTERSHOCK_CACHE) and rebuilt only when its inputs
# change: a warm run costs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
testbed="$repo/hack/testbed"
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
# shellcheck source=../../testbed/versions.env
. "$testbed/versions.env"
# shellcheck source=versions.env
. "$here/versions.env"
python=${PYTHON:-python3}
out="$cache/kind"
# The folder names the pins and a digest of the wrapper modules (their dependency versions).
toolbin="$cache/bin/kind-${KIND_VERSION}_crictl-${CRICTL_VERSION}_localpath-${LOCAL_PATH_VERSION}_$(cat "$here"/mod/*/go.sum | sha256sum | cut -c1-8)"
k8sbin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
mkdir -p "$out" "$toolbin"

log() { printf '[kind-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The names kubeadm v1.36.3 asks for (`kubeadm config images list`); the pause image is also
# containerd's sandbox_image (files/containerd.toml).
PAUSE_TAG=3.10.2
ETCD_TAG=3.6.8-0
COREDNS_TAG=v1.14.2
REG=registry.k8s.io

# --- binaries ------------------------------------------------------------------------------
export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
export GOMAXPROCS=${GOMAXPROCS:-2}

gobuild() {
  local name=$1 mod=$2 pkg=$3 ldflags=${4:-}
  [ -x "$toolbin/$name" ] && return 0
  log "building $name ($pkg)"
  local start=$SECONDS
  (cd "$here/mod/$mod" && go build -trimpath -ldflags "-s -w $ldflags" -o "$toolbin/$name.tmp" "$pkg")
  mv "$toolbin/$name.tmp" "$toolbin/$name"
  log "built $name in $((SECONDS - start))s"
}

tools() {
  "$testbed/build.sh" kind >/dev/null
  gobuild kind kind sigs.k8s.io/kind
  gobuild crictl crictl sigs.k8s.io/cri-tools/cmd/crictl \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}"
  gobuild local-path-provisioner local-path github.com/rancher/local-path-provisioner \
    "-X main.VERSION=${LOCAL_PATH_VERSION}"
  if [ ! -x "$toolbin/pause" ]; then
    gcc -static -O2 -o "$toolbin/pause" "$testbed/images/pause.c"
  fi
}

# --- images the node preloads --------------------------------------------------------------
mkimage() { "$python" "$testbed/images/mkimage.py" "$@" >/dev/null; }

# A Debian root filesystem with iptables and conntrack for kube-proxy (upstream's image is
# distroless plus iptables). Cached.
proxy_rootfs() {
  local dir="$out/rootfs-kube-proxy"
  if [ ! -f "$dir/.complete" ]; then
    log "debootstrap bookworm (minbase + iptables, conntrack) for kube-proxy"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase --include=iptables,conntrack,ipset,kmod bookworm "$dir.tmp" \
      >"$out/debootstrap-kube-proxy.log" 2>&1 || { tail -20 "$out/debootstrap-kube-proxy.log" >&2; exit 1; }
    rm -rf "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/var/cache/apt/* "$dir.tmp"/usr/share/{doc,man,locale}
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

images() {
  tools
  local shell a archives=()
  shell=$("$testbed/images.sh" shell)
  local imgdir="$out/images-${K8S_VERSION}"
  mkdir -p "$imgdir"
  # image NAME ARCHIVE ROOTFS mkimage-args...
  image() {
    local name=$1 archive=$imgdir/$2 rootfs=$3; shift 3
    archives+=("$archive")
    [ -f "$archive" ] && return 0
    mkimage "$rootfs" "$name" "$archive" "$@"
    log "built $name"
  }
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    image "$REG/$c:$K8S_VERSION" "$c.tar" "$shell" --add "$k8sbin/$c:/usr/local/bin/$c" --entrypoint "/usr/local/bin/$c"
  done
  image "$REG/kube-proxy:$K8S_VERSION" kube-proxy.tar "$(proxy_rootfs)" \
    --add "$k8sbin/kube-proxy:/usr/local/bin/kube-proxy" --entrypoint /usr/local/bin/kube-proxy
  image "$REG/etcd:$ETCD_TAG" "etcd-${ETCD_VERSION}.tar" "$shell" --add "$k8sbin/etcd:/usr/local/bin/etcd"
  # The slim CoreDNS (hack/coredns: only the plugins kubeadm's Corefile and a test bed use); its
  # folder's name (version and digest of its recipe) names the archive.
  local coredns
  coredns=$("$repo/hack/coredns/build.sh")
  image "$REG/coredns/coredns:$COREDNS_TAG" "$(basename "$(dirname "$coredns")").tar" "$shell" \
    --add "$coredns:/coredns" --entrypoint /coredns
  image "$REG/pause:$PAUSE_TAG" pause.tar "$shell" --add "$toolbin/pause:/pause" --entrypoint /pause
  # kind's default CNI (kindnetd) is not served by the module proxy; files/cni-agent.sh stands in
  # for it: same job (ptp CNI config from the node's podCIDR, routes to the other nodes' pod CIDRs).
  image registry.local/kind-cni-agent:local "cni-agent-$(sha256sum "$here/files/cni-agent.sh" | cut -c1-12).tar" "$shell" \
    --add "$k8sbin/kubectl:/bin/kubectl" --add "$here/files/cni-agent.sh:/bin/cni-agent" --entrypoint /bin/cni-agent
  image "registry.local/local-path-provisioner:${LOCAL_PATH_VERSION}" "local-path-${LOCAL_PATH_VERSION}-$(basename "$toolbin" | rev | cut -d_ -f1 | rev).tar" "$shell" \
    --add "$toolbin/local-path-provisioner:/usr/local/bin/local-path-provisioner"
  # kind's local-path-helper is sh, rm and mkdir: busybox is that.
  image registry.local/local-path-helper:local local-path-helper.tar "$shell"
  printf '%s\n' "${archives[@]}"
}

# --- the node's root filesystem ------------------------------------------------------------
NODE_PACKAGES=systemd,jq,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,bash,ca-certificates,procps,socat,ebtables
KIND_FILES=$(go env GOMODCACHE)/sigs.k8s.io/kind@${KIND_VERSION}/images/base/files

base_rootfs() {
  local dir="$out/rootfs-node-base"
  if [ ! -f "$dir/.complete" ] || [ "$(cat "$dir/.complete")" != "$NODE_PACKAGES" ]; then
    log "debootstrap bookworm (minbase + systemd, containerd, runc, CNI plugins, iptables; ~1-2 min)"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase --include="$NODE_PACKAGES" bookworm "$dir.tmp" \
      >"$out/debootstrap-node.log" 2>&1 || { tail -20 "$out/debootstrap-node.log" >&2; exit 1; }
    rm -rf "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/var/cache/apt/* "$dir.tmp"/usr/share/{doc,man,locale}
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "$NODE_PACKAGES" > "$dir/.complete"
  fi
  echo "$dir"
}

node() {
  # Both debootstraps (mostly download and unpack) run beside the Go builds (CPU); a cold build
  # costs their longest instead of their sum.
  local b p archives
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  base_rootfs >/dev/null & b=$!
  proxy_rootfs >/dev/null & p=$!
  tools
  wait "$b"; wait "$p"
  archives=$(images)
  (cd "$here/mod/kind" && go mod download "sigs.k8s.io/kind@${KIND_VERSION}")
  local key
  key=$( { echo "$NODE_PACKAGES"; cat "$0" "$here"/files/*; for a in $archives; do basename "$a"; done; \
           sha256sum "$k8sbin"/kubeadm "$k8sbin"/kubelet "$k8sbin"/kubectl "$toolbin"/crictl; } | sha256sum | cut -c1-16)
  local dir="$out/rootfs-node-$key"
  if [ -f "$dir/.complete" ]; then echo "$dir"; return 0; fi
  local base
  base=$(base_rootfs)
  log "node root filesystem $key"
  rm -rf "$dir.tmp" && cp -a "$base" "$dir.tmp" && rm -f "$dir.tmp/.complete"
  local r=$dir.tmp
  # What kind's base image Dockerfile does, on a folder instead of in a container.
  install -m 0755 "$KIND_FILES"/usr/local/bin/* "$r/usr/local/bin/"
  mkdir -p "$r/kind/bin" "$r/kind/manifests" "$r/etc/containerd" "$r/etc/kubernetes/manifests" \
    "$r/etc/systemd/system/kubelet.service.d" "$r/opt/cni"
  install -m 0644 "$KIND_FILES"/kind/README.txt "$r/kind/"
  install -m 0755 "$KIND_FILES"/kind/bin/* "$r/kind/bin/"
  install -m 0644 "$KIND_FILES"/etc/crictl.yaml "$r/etc/"
  install -m 0644 "$KIND_FILES"/etc/default/kubelet "$r/etc/default/"
  install -m 0644 "$KIND_FILES"/etc/sysctl.d/* "$r/etc/sysctl.d/"
  install -m 0644 "$KIND_FILES"/etc/systemd/system/{kubelet.service,kubelet.slice,undo-mount-hacks.service} "$r/etc/systemd/system/"
  install -m 0644 "$KIND_FILES"/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
  # Debian's containerd 1.6 (in /usr/bin) with kind's unit, and a containerd config for 1.6.
  sed 's#/usr/local/bin/containerd#/usr/bin/containerd#' "$KIND_FILES"/etc/systemd/system/containerd.service \
    > "$r/etc/systemd/system/containerd.service"
  install -m 0644 "$here/files/containerd.toml" "$r/etc/containerd/config.toml"
  # kind's base spec: `ctr oci spec` with its product-files hook and without rlimits.
  ctr oci spec | "$python" -c '
import json, sys
spec = json.load(sys.stdin)
spec["hooks"] = {"createContainer": [{"path": "/kind/bin/mount-product-files.sh"}]}
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' > "$r/etc/containerd/cri-base.json"
  # Debian's CNI plugins live in /usr/lib/cni; kind's config and kubelet look in /opt/cni/bin.
  ln -sfn /usr/lib/cni "$r/opt/cni/bin"
  install -m 0755 "$k8sbin"/kubeadm "$k8sbin"/kubelet "$k8sbin"/kubectl "$r/usr/bin/"
  install -m 0755 "$toolbin"/crictl "$r/usr/local/bin/"
  # systemd as kind's base image sets it up: only what a node needs is started.
  find "$r/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
    "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
    "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >> "$r/etc/systemd/journald.conf"
  ln -sfn /usr/lib/systemd/systemd "$r/sbin/init"
  install -m 0644 "$here/files/kubelet.path" "$r/etc/systemd/system/"
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  for u in kubelet.service containerd.service undo-mount-hacks.service kubelet.path; do
    ln -sfn "/etc/systemd/system/$u" "$r/etc/systemd/system/multi-user.target.wants/$u"
  done
  ln -sfn /dev/null "$r/etc/systemd/system/systemd-binfmt.service"
  # What `kind build node-image` adds: the version, the default CNI and storage manifests.
  echo -n "$K8S_VERSION" > "$r/kind/version"
  install -m 0644 "$here/files/default-cni.yaml" "$r/kind/manifests/default-cni.yaml"
  "$python" "$here/storage_manifest.py" "$KIND_VERSION" "registry.local/local-path-provisioner:${LOCAL_PATH_VERSION}" \
    registry.local/local-path-helper:local > "$r/kind/manifests/default-storage.yaml"
  preload "$r" $archives
  touch "$r/.complete" && rm -rf "$dir" && mv "$r" "$dir"
  # A node root filesystem is ~2 GB: keep only the current one (and the debootstrap base).
  find "$out" -maxdepth 1 -name 'rootfs-node-*' ! -name rootfs-node-base ! -path "$dir" -exec rm -rf {} +
  log "node root filesystem ready: $(du -sh "$dir" | cut -f1)"
  echo "$dir"
}

# Imports the archives into the node's own /var/lib/containerd with a throwaway containerd of the
# same version (Debian's) on a private socket: what kind's build does inside a build container.
preload() {
  local r=$1; shift
  local state=/run/aftershock-kind-preload sock
  sock=$state/containerd.sock
  rm -rf "$state" && mkdir -p "$state"
  cat > "$state/config.toml" <<EOF
version = 2
root = "$r/var/lib/containerd"
state = "$state/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
EOF
  containerd --config "$state/config.toml" >"$out/preload-containerd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
  local a
  for a in "$@"; do
    ctr --address "$sock" -n k8s.io images import --no-unpack=false --all-platforms=false "$a" >/dev/null \
      || { kill "$pid"; log "import failed: $a"; exit 1; }
  done
  ctr --address "$sock" -n k8s.io images ls -q >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$state"
}

# One build at a time (binaries are written to a .tmp name, then moved): `make test` starts a
# node build early in the background (Makefile), and the kind test's `make kind-up` then waits
# here for it and finds everything cached. `bins` builds nothing and takes no lock.
if [ "${1:-node}" != bins ]; then
  exec 8>"$out/build.lock"
  flock 8
fi
case "${1:-node}" in
  tools) tools; echo "$toolbin" ;;
  images) images ;;
  node) node ;;
  base) base_rootfs; proxy_rootfs ;;
  bins) echo "$toolbin"; echo "$k8sbin" ;;
  *) echo "usage: $0 tools|images|node|base|bins" >&2; exit 2 ;;
esac
