#!/usr/bin/env bash
# A real node beside the kwok nodes: containerd + runc + CNI from Debian, kubelet built from
# the pinned Kubernetes module, a pause image built here from C. Real pods, real processes,
# no registry. Facts and pitfalls: docs/adr/0006-real-node.md.
#
#   realnode.sh up        start containerd and kubelet, register node real-0 (idempotent)
#   realnode.sh down      stop them and remove everything the node made
#   realnode.sh status    exit 0 when node real-0 is Ready
#   realnode.sh can       exit 0 when this machine can host it; otherwise print why
#   realnode.sh import F  import an image archive into the node's containerd
#   realnode.sh digest N  the digest the node's containerd holds for image N (empty: none)
#   realnode.sh state-dir the node's state folder
#
# AFTERSHOCK_REALNODE_INDEX=1: the same for a second node, real-1 (opt-in; see below).
#
# Called by cluster.sh for the default cluster. Needs root and Debian (apt) packages:
# containerd, runc, containernetworking-plugins (installed here when missing).
#
# Network: pods are either hostNetwork (anything that must reach 127.0.0.1: the API server,
# the PD stand-in) or on the bridge rn0, which has no gateway address, no masquerade and no
# default route: bridge pods reach only each other.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
# shellcheck source=versions.env
. "$here/versions.env"
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
# AFTERSHOCK_REALNODE_INDEX=1 runs a second node, real-1, beside real-0 (node_failure's e2e: a
# member can really move). Everything it makes is its own: state folder, containerd socket and
# state, bridge and subnet, kubelet ports, cgroup root, hosts line; its `down` leaves real-0
# alone. It carries its own label and taint (aftershock.dev/real-node-1), so pods that ask for
# real-0 (nodeSelector aftershock.dev/real-node=true) never land on it.
index=${AFTERSHOCK_REALNODE_INDEX:-0}
case "$index" in 0|1) ;; *) echo "AFTERSHOCK_REALNODE_INDEX must be 0 or 1" >&2; exit 2 ;; esac
node=real-$index
if [ "$index" = 0 ]; then
  state="$cache/realnode"
  run_dir=/run/containerd
  bridge=rn0
  subnet=10.88.0.0/16
  hosts_mark="# aftershock real node"
  kubelet_port=10350
  kubelet_healthz_port=10348
  # kubelet's cgroup root: pods under /kubepods in every hierarchy.
  cgroup_root=/
  node_label="aftershock.dev/real-node=true"
  node_taint="aftershock.dev/real-node"
else
  state="$cache/realnode-$index"
  run_dir=/run/aftershock-real-$index/containerd
  bridge=rn$index
  subnet=10.$((88 + index)).0.0/16
  hosts_mark="# aftershock real-$index node"
  kubelet_port=$((10350 + 10 * index))
  kubelet_healthz_port=$((10348 + 10 * index))
  cgroup_root=/aftershock-real-$index
  node_label="aftershock.dev/real-node-$index=true"
  node_taint="aftershock.dev/real-node-$index"
fi
sock=$run_dir/containerd.sock
# The kubepods cgroups of this node, as /proc/PID/cgroup names them (":/kubepods/..." for real-0).
cgroup_prefix="${cgroup_root%/}/kubepods"

log() { printf '[realnode %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# Why this machine cannot host a real node, or nothing.
cannot() {
  [ "$(id -u)" = 0 ] || { echo "not root (containerd and kubelet need root)"; return; }
  [ -f /etc/debian_version ] && command -v apt-get >/dev/null ||
    { echo "not Debian (containerd, runc and CNI plugins come from Debian's packages)"; return; }
  [ -d /sys/fs/cgroup ] || { echo "no cgroup filesystem"; return; }
}

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing from Debian: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

running() { [ -f "$state/run/$1.pid" ] && kill -0 "$(cat "$state/run/$1.pid")" 2>/dev/null; }

# ctr hangs ~10 s when the socket is missing: test it first.
ctr_k8s() { [ -S "$sock" ] || die "containerd is not running"; ctr --address "$sock" -n k8s.io "$@"; }

write_configs() {
  mkdir -p "$state"/{etc/cni/net.d,var/cni-ipam,var/containerd,var/pod-logs,kubelet,run,logs,pki}
  # The VM may drop CAP_SYS_RESOURCE (bit 24): then runc cannot set oom_score_adj below 0
  # and the first pod fails with "can't get final child's PID from pipe".
  local capeff restrict=false
  capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
  (( (16#$capeff >> 24) & 1 )) || restrict=true
  cat > "$state/etc/containerd.toml" <<EOF
version = 2
root = "$state/var/containerd"
state = "$run_dir"
[grpc]
  address = "$sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.local/pause:local"
    enable_cdi = false
    restrict_oom_score_adj = $restrict
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          # runc's state beside this containerd's (real-1's apart from real-0's).
          Root = "$run_dir/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$state/etc/cni/net.d"
EOF
  # No gateway, no masquerade, no default route: bridge pods reach each other and nothing else.
  cat > "$state/etc/cni/net.d/10-realnode.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "realnode-$index",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]], "dataDir": "$state/var/cni-ipam"}
    }
  ]
}
EOF
  printf 'nameserver 127.0.0.1\noptions ndots:1\n' > "$state/etc/pod-resolv.conf"
  cat > "$state/etc/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups v1 hosts: kubelet >= 1.35 refuses v1 unless told otherwise.
failCgroupV1: false
# containerd 1.6 lacks the RuntimeConfig CRI call; kubelet 1.36 then falls back to cgroupfs.
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: $cgroup_root
enforceNodeAllocatable: ["pods"]
failSwapOn: false
protectKernelDefaults: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
# Loopback only; the API server reaches it by the node's name (a hosts line), and has no
# kubelet client certificate (kwokctl), hence anonymous access on 127.0.0.1.
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
resolvConf: $state/etc/pod-resolv.conf
podLogsDir: $state/var/pod-logs
registerNode: true
# Only pods that ask for the real node land here; the kwok nodes keep everything else.
registerWithTaints:
- {key: $node_taint, value: "true", effect: NoSchedule}
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 10s
shutdownGracePeriod: 0s
EOF
}

# The kubelet's own identity: a client certificate for system:node:real-0 signed by the
# cluster's CA, so the Node authorizer (Node,RBAC) judges it as it judges any kubelet.
kubelet_kubeconfig() {
  local pki=$1 server=$2 out="$state/etc/kubelet.kubeconfig"
  local key="$state/pki/kubelet.key" crt="$state/pki/kubelet.crt"
  if [ ! -s "$crt" ] || ! openssl verify -CAfile "$pki/ca.crt" "$crt" >/dev/null 2>&1; then
    openssl req -new -newkey rsa:2048 -nodes -keyout "$key" -subj "/O=system:nodes/CN=system:node:$node" \
      -out "$state/pki/kubelet.csr" 2>/dev/null
    openssl x509 -req -in "$state/pki/kubelet.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 365 -out "$crt" 2>/dev/null
  fi
  "$bin/kubectl" config --kubeconfig "$out" set-cluster local --server "$server" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$out" set-credentials kubelet \
    --client-certificate "$crt" --client-key "$key" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$out" set-context local --cluster local --user kubelet >/dev/null
  "$bin/kubectl" config --kubeconfig "$out" use-context local >/dev/null
  echo "$out"
}

start_containerd() {
  if running containerd && [ -S "$sock" ]; then return 0; fi
  log "starting containerd"
  setsid containerd --config "$state/etc/containerd.toml" >"$state/logs/containerd.log" 2>&1 < /dev/null &
  echo $! > "$state/run/containerd.pid"
  for _ in $(seq 1 100); do
    [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "containerd did not start: $state/logs/containerd.log"
}

pause_image() {
  if ctr_k8s images ls -q | grep -qx registry.local/pause:local; then return 0; fi
  local work="$state/build/pause"
  rm -rf "$work" && mkdir -p "$work/rootfs"
  gcc -static -Os -o "$work/rootfs/pause" "$here/images/pause.c"
  "${PYTHON:-python3}" "$here/images/mkimage.py" "$work/rootfs" registry.local/pause:local "$work/pause.tar" \
    --entrypoint /pause >/dev/null
  ctr_k8s images import --no-unpack=false "$work/pause.tar" >/dev/null
  log "pause image built and imported"
}

hosts_line() {
  grep -qF "$hosts_mark" /etc/hosts || printf '127.0.0.1 %s %s\n' "$node" "$hosts_mark" >> /etc/hosts
}

# kubelet checks that its cgroup root exists in every hierarchy (real-1's is its own).
cgroup_root_dirs() {
  [ "$cgroup_root" = / ] && return 0
  local hier
  for hier in /sys/fs/cgroup/*/; do
    [ -e "$hier/cgroup.procs" ] && mkdir -p "$hier${cgroup_root#/}"
  done
  [ -e /sys/fs/cgroup/cgroup.procs ] && mkdir -p "/sys/fs/cgroup${cgroup_root}" || true
}

start_kubelet() {
  local kc=$1
  if running kubelet; then return 0; fi
  [ -x "$bin/kubelet" ] || die "no kubelet in $bin: run hack/testbed/build.sh"
  log "starting kubelet (node $node)"
  setsid "$bin/kubelet" --config "$state/etc/kubelet-config.yaml" --kubeconfig "$kc" \
    --hostname-override "$node" --root-dir "$state/kubelet" --cert-dir "$state/pki/kubelet-serving" \
    --node-labels "$node_label,topology.kubernetes.io/zone=zone-real,topology.kubernetes.io/region=local" \
    >>"$state/logs/kubelet.log" 2>&1 < /dev/null &
  echo $! > "$state/run/kubelet.pid"
}

# For fault tests: SIGKILL one part (its containers keep running: shims outlive both), and
# start again whatever is not running, with the configuration `up` wrote.
kill_part() {
  local name=$1 pid
  [ -f "$state/run/$name.pid" ] || die "$name is not running"
  pid=$(cat "$state/run/$name.pid")
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$state/run/$name.pid"
  log "$name killed (pid $pid)"
}
revive() {
  [ -f "$state/etc/kubelet.kubeconfig" ] || die "no node configuration: run up first"
  start_containerd
  start_kubelet "$state/etc/kubelet.kubeconfig"
}

up() {
  local kubeconfig=${1:?kubeconfig} pki=${2:?pki dir}
  local why start=$SECONDS
  why=$(cannot)
  [ -z "$why" ] || die "this machine cannot host the real node: $why"
  ensure_packages
  write_configs
  hosts_line
  cgroup_root_dirs
  # The bridge has no address on the host, so without this the host would send anything
  # addressed to a pod IP (a kubelet probe of a bridge pod, an API server proxy) out through its
  # default route, off the machine. Pod IPs exist only inside this node: refuse them at the host.
  ip route replace unreachable "$subnet"
  start_containerd
  pause_image
  local server
  server=$("$bin/kubectl" --kubeconfig "$kubeconfig" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  start_kubelet "$(kubelet_kubeconfig "$pki" "$server")"
  local k=("$bin/kubectl" --kubeconfig "$kubeconfig")
  for _ in $(seq 1 120); do
    "${k[@]}" get node "$node" >/dev/null 2>&1 && break
    running kubelet || die "kubelet exited: $state/logs/kubelet.log"
    sleep 0.5
  done
  "${k[@]}" wait --for=condition=Ready "node/$node" --timeout=120s >/dev/null ||
    die "node $node not Ready: $state/logs/kubelet.log"
  log "node $node Ready in $((SECONDS - start))s"
}

stop_pid() {
  local name=$1 pid
  [ -f "$state/run/$name.pid" ] || return 0
  pid=$(cat "$state/run/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/run/$name.pid"
}

# Every process that runs inside a container of this node, by its cgroup.
container_pids() {
  grep -lE ":$cgroup_prefix(/|\$)" /proc/[0-9]*/cgroup 2>/dev/null | sed -n 's#/proc/\([0-9]*\)/cgroup#\1#p' || true
}

# This node's pod network namespaces: those holding an address of its subnet.
own_netns() {
  local m prefix=${subnet%.0.0/16}.
  for m in /run/netns/cni-*; do
    [ -e "$m" ] || continue
    ip -n "$(basename "$m")" -4 addr show 2>/dev/null | grep -qF "inet $prefix" && basename "$m"
  done
  return 0
}

down() {
  stop_pid kubelet
  # Containers and their shims: kill what runs in pod cgroups, then the shims of this
  # containerd (their command line names its socket's address).
  local pids
  pids=$(container_pids)
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  stop_pid containerd
  pkill -KILL -f "containerd --config $state/etc/containerd.toml" 2>/dev/null || true
  # Mounts the node made (kubelet volumes, container rootfs, sandbox shm), deepest first.
  local m
  if [ "$index" = 0 ]; then
    for m in $(awk '{print $2}' /proc/self/mounts | grep -E "^($state/|/run/containerd/|/run/netns/cni-)" | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
    for m in /run/netns/cni-*; do
      [ -e "$m" ] && ip netns delete "$(basename "$m")" 2>/dev/null || true
    done
  else
    # Only what this node made: real-0 (and its pods' netns) stay as they are.
    local own
    own=$(own_netns)
    for m in $(awk '{print $2}' /proc/self/mounts | grep -E "^($state/|${run_dir%/containerd}/)" | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
    for m in $own; do
      umount -l "/run/netns/$m" 2>/dev/null || true
      ip netns delete "$m" 2>/dev/null || true
    done
  fi
  ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge" 2>/dev/null || true
  ip route del unreachable "$subnet" 2>/dev/null || true
  # kubelet's cgroups (cgroupfs driver): kubepods in every hierarchy, leaves first.
  local hier top=${cgroup_root%/}
  for hier in /sys/fs/cgroup/*"$top"/kubepods "/sys/fs/cgroup$top/kubepods"; do
    [ -d "$hier" ] && find "$hier" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ -n "$top" ]; then
    for hier in /sys/fs/cgroup/*"$top" "/sys/fs/cgroup$top"; do
      [ -d "$hier" ] && rmdir "$hier" 2>/dev/null || true
    done
  fi
  if grep -qF "$hosts_mark" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite in place, never replace the file.
    local kept
    kept=$(grep -vF "$hosts_mark" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
  fi
  [ "$index" = 0 ] || rm -rf "$(dirname "$run_dir")"
  rm -rf "$run_dir" "$state/kubelet" "$state/var" "$state/run" "$state/etc" "$state/build" \
    "$state/imported" 2>/dev/null || true
  log "node $node removed (containers, mounts, netns, bridge, cgroups, hosts line)"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  can) why=$(cannot); [ -z "$why" ] || { echo "$why"; exit 1; } ;;
  status) running kubelet && running containerd ;;
  import) shift; ctr_k8s images import "$1" >/dev/null ;;
  digest) shift; [ -S "$sock" ] && ctr_k8s images ls 2>/dev/null | awk -v n="$1" '$1 == n {print $3}' || true ;;
  state-dir) echo "$state" ;;
  kill) shift; kill_part "${1:?kubelet or containerd}" ;;
  revive) revive ;;
  *) echo "usage: $0 up KUBECONFIG PKI_DIR|down|status|can|import ARCHIVE|kill kubelet|containerd|revive" >&2; exit 2 ;;
esac
