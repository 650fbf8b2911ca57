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
#   realnode.sh tag S D   give image S the name D too, in the node's containerd
#
# Called by cluster.sh for the default cluster. Needs root and Debian (apt) packages:
# containerd, runc, containernetworking-plugins (installed here when missing).
#
# Network: pods are either hostNetwork (anything that must reach 127.0.0.1: the API server,
# the PD stand-in) or on the bridge rn0, which gives pods no gateway, no masquerade and no
# default route: bridge pods reach only each other and the cluster DNS. The node itself has an
# address on the bridge (10.88.0.1, as a CNI bridge's node has), so that the kubelet's probes and
# hostNetwork pods reach pod IPs; a pod cannot open anything on the node (iptables chain
# AFTERSHOCK-<bridge> drops all but answers).
#
# Cluster DNS: CoreDNS (built from its module, hack/coredns/build.sh) in a network namespace of
# the node's own (aftershock-dns, 10.88.255.254 on the bridge), the kubelet's clusterDNS, domain
# cluster.local. It reads the API through a relay on loopback (a unix socket between the
# namespaces), answers cluster names only and forwards nothing: no query leaves the machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
# shellcheck source=versions.env
. "$here/versions.env"
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
# AFTERSHOCK_REAL_NODE_NAME (with an instance): a second node of the default cluster under a
# name of its own, e.g. real-1 (node_failure's e2e: a member can really move). It carries its
# own label and taint (aftershock.dev/real-node-1 for real-1), so pods that ask for real-0
# (nodeSelector aftershock.dev/real-node=true) never land there, and its own hosts line.
node=${AFTERSHOCK_REAL_NODE_NAME:-real-0}
hosts_mark="# aftershock real node"
node_label=aftershock.dev/real-node
if [ "$node" != real-0 ]; then
  [[ "$node" =~ ^real-[0-9]{1,2}$ ]] || { echo "bad AFTERSHOCK_REAL_NODE_NAME '$node'" >&2; exit 2; }
  [ -n "${AFTERSHOCK_REAL_NODE_INSTANCE:-}" ] ||
    { echo "AFTERSHOCK_REAL_NODE_NAME $node needs AFTERSHOCK_REAL_NODE_INSTANCE (its own containerd, kubelet, bridge)" >&2; exit 2; }
  hosts_mark="# aftershock $node node"
  node_label="aftershock.dev/real-node-${node#real-}"
fi
# One machine may host a second node, for a second cluster (the reliability suite's own,
# whose control plane it kills): AFTERSHOCK_REAL_NODE_INSTANCE names it (cluster.sh passes the
# cluster's name). Each instance has its own containerd (socket, state, root), kubelet (ports,
# root dir), CNI bridge and subnet, and cgroup root, so neither touches the other's pods; both
# register as node real-0, each in its own cluster, and share the hosts line.
instance=${AFTERSHOCK_REAL_NODE_INSTANCE:-}
if [ -z "$instance" ]; then
  state="$cache/realnode"
  run_dir=/run/containerd
  bridge=rn0
  subnet=10.88.0.0/16
  kubelet_port=10350
  kubelet_healthz_port=10348
  cgroup_root=/
  cni_name=realnode
else
  [[ "$instance" =~ ^[a-z0-9-]{1,40}$ ]] || { echo "bad AFTERSHOCK_REAL_NODE_INSTANCE '$instance'" >&2; exit 2; }
  # A number from the name: the subnet and ports of this instance (10..99; the default node
  # is 0, and low numbers are left to other nodes of the default cluster).
  slot=$(( 16#$(printf '%s' "$instance" | sha256sum | cut -c1-4) % 90 + 10 ))
  state="$cache/realnode-$instance"
  run_dir="/run/aftershock-containerd-$slot"
  bridge="rn$slot"
  subnet="10.$((88 + slot)).0.0/16"
  kubelet_port=$((10350 + 10 * slot))
  kubelet_healthz_port=$((10348 + 10 * slot))
  cgroup_root="/aftershock-node-$slot"
  cni_name="realnode-$slot"
fi
sock=$run_dir/containerd.sock
# The node's own address on its pod bridge, and the cluster DNS's (the subnet's first and last).
net=${subnet%.0.0/16}
node_ip=$net.0.1
dns_ip=$net.255.254
dns_netns=aftershock-dns${instance:+-$instance}
dns_veth=$bridge-dns
node_chain=AFTERSHOCK-$bridge
cluster_domain=cluster.local
repo=$(cd "$here/../.." && pwd)

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
  command -v iptables >/dev/null || missing+=(iptables)
  # The cluster DNS's relay to the API server (loopback <-> a unix socket <-> its namespace).
  command -v socat >/dev/null || missing+=(socat)
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
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$state/etc/cni/net.d"
EOF
  # No gateway, no masquerade, no default route: bridge pods reach each other and the DNS.
  # The range ends below the cluster DNS's address (host-local never hands out .1, its gateway).
  cat > "$state/etc/cni/net.d/10-realnode.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet", "rangeEnd": "$net.255.250"}]], "dataDir": "$state/var/cni-ipam"}
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
# The test bed's CoreDNS (cluster_dns below): pods resolve <svc>.<ns>.svc.cluster.local as in
# any cluster; hostNetwork pods do with dnsPolicy ClusterFirstWithHostNet.
clusterDNS: [$dns_ip]
clusterDomain: $cluster_domain
podLogsDir: $state/var/pod-logs
registerNode: true
# Only pods that ask for the real node land here; the kwok nodes keep everything else.
registerWithTaints:
- {key: $node_label, value: "true", effect: NoSchedule}
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 10s
# The node's lease renewed every 2.5 s (a quarter of its duration): the controller-manager's
# grace period is 30 s on the test bed (cluster.sh), so twelve renewals fit in it.
nodeLeaseDurationSeconds: 10
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

# The kubelet refuses a cgroup root that does not exist (an instance's is a folder of the top).
# Its CPU weight: a real node's pods have the node's CPUs to themselves; here they share the
# host's two with the test runner (pytest workers, builds), each process of which weighs 1024 in
# the top cgroup, as much as an instance's whole folder by default. An etcd member starved for its election
# timeout (1 s) loses its leader: a relapse the test bed made, not the subject (seen in session
# 9: all three members of the remediator evaluation unanswering at once while three workers ran
# the unit tests). So the folder weighs what a kubelet gives a node's pods: real-0's pods are in
# the top kubepods, which its kubelet weighs by its allocatable CPUs (2 x 1024), and so does each
# extra node's, every node alike (a heavier one took CPU from real-0's timing tests). Idle, they
# take nothing.
instance_cpu_shares=2048
make_cgroup_root() {
  [ -n "$instance" ] || return 0
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p "/sys/fs/cgroup$cgroup_root"
    # cgroup v2's weight for v1's shares (the kernel's and runc's conversion)
    echo $(( 1 + ((instance_cpu_shares - 2) * 9999) / 262142 )) > "/sys/fs/cgroup$cgroup_root/cpu.weight" 2>/dev/null || true
    return 0
  fi
  local hier
  for hier in /sys/fs/cgroup/*/; do
    [ -L "${hier%/}" ] || mkdir -p "${hier%/}$cgroup_root" 2>/dev/null || true
  done
  [ -f "/sys/fs/cgroup/cpu$cgroup_root/cpu.shares" ] &&
    echo "$instance_cpu_shares" > "/sys/fs/cgroup/cpu$cgroup_root/cpu.shares" || true
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

start_kubelet() {
  local kc=$1
  if running kubelet; then return 0; fi
  [ -x "$bin/kubelet" ] || die "no kubelet in $bin: run hack/testbed/build.sh"
  log "starting kubelet (node $node)"
  setsid "$bin/kubelet" --config "$state/etc/kubelet-config.yaml" --kubeconfig "$kc" \
    --hostname-override "$node" --root-dir "$state/kubelet" --cert-dir "$state/pki/kubelet-serving" \
    --node-labels "$node_label=true,topology.kubernetes.io/zone=zone-real,topology.kubernetes.io/region=local" \
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
  make_cgroup_root
  start_containerd
  start_kubelet "$state/etc/kubelet.kubeconfig"
}

# The node's address on its pod network. Destinations stay pod IPs (a kubelet probe, the
# in-cluster operator reaching a subject); pods may answer the node but open nothing on it.
# Routes to the pods: the subnet's two halves through the bridge, more specific than the
# unreachable route for the whole subnet (up), which remains when the bridge is gone: then
# anything addressed to a pod IP is refused at the host, never sent out through the default
# route, off the machine.
node_on_bridge() {
  ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
  ip link set "$bridge" up
  ip addr replace "$node_ip/16" dev "$bridge" noprefixroute
  ip route replace "$net.0.0/17" dev "$bridge" scope link src "$node_ip"
  ip route replace "$net.128.0/17" dev "$bridge" scope link src "$node_ip"
  iptables -w -N "$node_chain" 2>/dev/null || true
  iptables -w -F "$node_chain"
  iptables -w -A "$node_chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  iptables -w -A "$node_chain" -j DROP
  iptables -w -C INPUT -i "$bridge" -j "$node_chain" 2>/dev/null ||
    iptables -w -I INPUT 1 -i "$bridge" -j "$node_chain"
}

# start_part NAME CMD...: a process of the node's (pid in run/NAME.pid, log in logs/NAME.log),
# unless it runs.
start_part() {
  local name=$1; shift
  running "$name" && return 0
  setsid "$@" >>"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/run/$name.pid"
}

# The cluster DNS: CoreDNS in netns aftershock-dns, its API access relayed over a unix socket.
cluster_dns() {
  local kubeconfig=$1 pki=$2 server=$3 coredns port token=""
  coredns=$("$repo/hack/coredns/build.sh")
  port=${server##*:}
  [ -e "/run/netns/$dns_netns" ] || ip netns add "$dns_netns"
  if ! ip link show "$dns_veth" >/dev/null 2>&1; then
    ip link add "$dns_veth" type veth peer name eth0 netns "$dns_netns"
  fi
  ip link set "$dns_veth" master "$bridge" up
  ip -n "$dns_netns" link set lo up
  ip -n "$dns_netns" addr replace "$dns_ip/16" dev eth0
  ip -n "$dns_netns" link set eth0 up
  # Its identity: a ServiceAccount's long-lived token, with what kubeadm grants CoreDNS.
  local k=("$bin/kubectl" --kubeconfig "$kubeconfig")
  "${k[@]}" apply -f "$here/manifests/coredns.yaml" >/dev/null
  for _ in $(seq 1 60); do
    token=$("${k[@]}" -n kube-system get secret coredns-token -o jsonpath='{.data.token}' 2>/dev/null || true)
    [ -n "$token" ] && break
    sleep 0.5
  done
  [ -n "$token" ] || die "no token for ServiceAccount kube-system/coredns"
  # Its configuration; a CoreDNS started with another one is started again (the kubernetes
  # plugin reads its kubeconfig once).
  local changed=0
  umask 077
  printf '%s\n' "apiVersion: v1" "kind: Config" \
    "clusters: [{name: local, cluster: {server: \"https://127.0.0.1:$port\", certificate-authority: \"$pki/ca.crt\"}}]" \
    "users: [{name: coredns, user: {token: \"$(printf '%s' "$token" | base64 -d)\"}}]" \
    "contexts: [{name: local, context: {cluster: local, user: coredns}}]" \
    "current-context: local" > "$state/etc/coredns.kubeconfig.new"
  umask 022
  # Cluster names only, and no forward plugin: a name outside the cluster gets no answer here.
  printf '%s\n' "$cluster_domain:53 in-addr.arpa:53 {" \
    "    bind $dns_ip" \
    "    errors" \
    "    kubernetes $cluster_domain in-addr.arpa {" \
    "        kubeconfig $state/etc/coredns.kubeconfig local" \
    "        ttl 5" \
    "    }" \
    "}" > "$state/etc/Corefile.new"
  local f
  for f in coredns.kubeconfig Corefile; do
    if cmp -s "$state/etc/$f.new" "$state/etc/$f"; then rm "$state/etc/$f.new"; else
      mv "$state/etc/$f.new" "$state/etc/$f"; changed=1
    fi
  done
  [ "$changed" = 0 ] || stop_pid coredns
  # The relays, started again for another API server (a new cluster has a new port).
  if [ "$(cat "$state/etc/dns-relay.port" 2>/dev/null)" != "$port" ]; then
    stop_pid dns-relay-netns
    stop_pid dns-relay-node
    echo "$port" > "$state/etc/dns-relay.port"
  fi
  # Loopback in the node's namespace <- a unix socket <- loopback in the DNS's namespace.
  start_part dns-relay-node socat "UNIX-LISTEN:$state/run/apiserver.sock,fork,unlink-early,mode=600" \
    "TCP:127.0.0.1:$port"
  start_part dns-relay-netns ip netns exec "$dns_netns" socat \
    "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$state/run/apiserver.sock"
  start_part coredns ip netns exec "$dns_netns" "$coredns" -conf "$state/etc/Corefile"
  for _ in $(seq 1 120); do
    if "${PYTHON:-python3}" "$here/dnsquery.py" "$dns_ip" "kubernetes.default.svc.$cluster_domain" >/dev/null 2>&1; then
      return 0
    fi
    running coredns || die "CoreDNS exited: $state/logs/coredns.log"
    sleep 0.5
  done
  # Running, not answering yet (its first list of the API is slow on a loaded machine): the node
  # is usable meanwhile; a pod that needs a name waits for it as it would in any cluster.
  log "the cluster DNS does not answer kubernetes.default.svc.$cluster_domain yet: $state/logs/coredns.log"
}

stop_dns() {
  stop_pid coredns
  stop_pid dns-relay-netns
  stop_pid dns-relay-node
  if [ -e "/run/netns/$dns_netns" ]; then ip netns delete "$dns_netns" 2>/dev/null || true; fi
  ip link delete "$dns_veth" 2>/dev/null || true
  rm -f "$state/run/apiserver.sock"
}

up() {
  local kubeconfig=${1:?kubeconfig} pki=${2:?pki dir}
  local why start=$SECONDS
  why=$(cannot)
  [ -z "$why" ] || die "this machine cannot host the real node: $why"
  ensure_packages
  write_configs
  hosts_line
  # Pod IPs exist only inside this node: refuse them at the host, but through the bridge.
  ip route replace unreachable "$subnet"
  make_cgroup_root
  node_on_bridge
  start_containerd
  pause_image
  local server
  server=$("$bin/kubectl" --kubeconfig "$kubeconfig" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  cluster_dns "$kubeconfig" "$pki" "$server"
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

# Every process that runs inside a container of this node, by its cgroup (kubepods under
# this instance's cgroup root; the default node's is the top, an instance's a folder of it).
container_pids() {
  local root=${cgroup_root%/}
  grep -lE ":$root/kubepods" /proc/[0-9]*/cgroup 2>/dev/null | sed -n 's#/proc/\([0-9]*\)/cgroup#\1#p' || true
}

# The pod network namespaces of this node: those whose eth0 is a veth on this node's bridge,
# and (default node only) those left without one, from a node removed earlier.
own_netns() {
  local ns peer master
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    ns=$(basename "$ns")
    peer=$(ip -n "$ns" -o link show eth0 2>/dev/null | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
    master=""
    [ -z "$peer" ] || master=$(ip -o link show 2>/dev/null | awk -v i="$peer:" '$1 == i' |
      sed -n 's/.* master \([^ ]*\) .*/\1/p')
    if [ "$master" = "$bridge" ] || { [ -z "$instance" ] && [ -z "$master" ]; }; then echo "$ns"; fi
  done
}

# True while another instance's kubelet runs (the hosts line is shared).
others_running() {
  local pidfile
  for pidfile in "$cache"/realnode/run/kubelet.pid "$cache"/realnode-*/run/kubelet.pid; do
    [ -f "$pidfile" ] || continue
    [ "$pidfile" != "$state/run/kubelet.pid" ] || continue
    kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
  done
  return 1
}

down() {
  stop_pid kubelet
  stop_dns
  # Containers and their shims: kill what runs in pod cgroups, then the shims of this
  # containerd (their command line names its socket's address).
  local pids netns
  pids=$(container_pids)
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock( |\$)" 2>/dev/null || true
  stop_pid containerd
  pkill -KILL -f "containerd --config $state/etc/containerd.toml" 2>/dev/null || true
  netns=$(own_netns)
  # Mounts the node made (kubelet volumes, container rootfs, sandbox shm), deepest first.
  local m
  for m in $(awk '{print $2}' /proc/self/mounts | grep -E "^($state/|$run_dir/)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for m in $netns; do
    umount -l "/run/netns/$m" 2>/dev/null || true
    ip netns delete "$m" 2>/dev/null || true
  done
  ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge" 2>/dev/null || true
  ip route del unreachable "$subnet" 2>/dev/null || true
  if iptables -w -C INPUT -i "$bridge" -j "$node_chain" 2>/dev/null; then
    iptables -w -D INPUT -i "$bridge" -j "$node_chain"
  fi
  iptables -w -F "$node_chain" 2>/dev/null && iptables -w -X "$node_chain" 2>/dev/null || true
  # kubelet's cgroups (cgroupfs driver): kubepods in every hierarchy, leaves first.
  local hier root=${cgroup_root%/}
  for hier in /sys/fs/cgroup/*"$root"/kubepods /sys/fs/cgroup"$root"/kubepods; do
    [ -d "$hier" ] && find "$hier" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ -n "$instance" ]; then
    for hier in /sys/fs/cgroup/*"$root" /sys/fs/cgroup"$root"; do
      [ -d "$hier" ] && rmdir "$hier" 2>/dev/null || true
    done
  fi
  # real-0's line is shared by the instances that register as real-0; a named node's is its own.
  if grep -qF "$hosts_mark" /etc/hosts && { [ "$node" != real-0 ] || ! others_running; }; then
    # /etc/hosts may be a bind mount: rewrite in place, never replace the file.
    local kept
    kept=$(grep -vF "$hosts_mark" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
  fi
  rm -rf "$run_dir" "$state/kubelet" "$state/var" "$state/run" "$state/etc" "$state/build" \
    "$state/imported" 2>/dev/null || true
  log "node $node${instance:+ ($instance)} removed (containers, mounts, netns, bridge, cluster DNS, cgroups, hosts line)"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  can) why=$(cannot); [ -z "$why" ] || { echo "$why"; exit 1; } ;;
  status) running kubelet && running containerd ;;
  state-dir) echo "$state" ;;
  socket) echo "$sock" ;;
  cgroup-root) echo "$cgroup_root" ;;
  import) shift; ctr_k8s images import "$1" >/dev/null ;;
  tag) shift; ctr_k8s images tag --force "$1" "$2" >/dev/null ;;
  kill) shift; kill_part "${1:?kubelet or containerd}" ;;
  revive) revive ;;
  *) echo "usage: $0 up KUBECONFIG PKI_DIR|down|status|can|import ARCHIVE|tag SRC DST|kill kubelet|containerd|revive" >&2; exit 2 ;;
esac
