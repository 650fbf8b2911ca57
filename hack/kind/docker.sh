#!/usr/bin/env bash
# A Docker daemon of the project's own for kind, on machines with no Docker of their own (this
# one and CI: Debian's docker.io). It lives beside anything else on the host and leaves no trace:
#   - its own socket, data root (in the cache: keeps the node image) and exec root;
#   - no docker0 (--bridge=none); kind's network "kind" is made here first, on a bridge named
#     aftershock-kind, without masquerading, and DOCKER-USER drops whatever would leave that
#     bridge for another interface: nodes and pods reach each other and this host, nothing else
#     (no image is pulled; everything is preloaded). External names do not resolve either: the
#     embedded DNS forwards to 127.0.0.1 (--dns), where nothing answers;
#   - iptables on, because Docker's embedded DNS (kind nodes find the control plane by name)
#     needs its rules in each container; --ip-forward=false, so Docker never touches the host's
#     ip_forward or FORWARD policy, and `down` deletes every rule and chain it made;
#   - on machines whose capability bounding set lacks CAP_SYS_RESOURCE, runc is run through
#     runc-wrapper.py, or no privileged container (every kind node is one) can start.
#
#   hack/kind/docker.sh up      start it (no-op when it runs); prints `export DOCKER_HOST=...`
#   hack/kind/docker.sh down    remove kind's leftovers, stop it, delete its iptables rules
#   hack/kind/docker.sh env     print `export DOCKER_HOST=...`
#   hack/kind/docker.sh load    import the node image built by hack/kind/node/build.sh; prints its name
#
# A machine with its own Docker needs none of this: the hack/kind scripts use it when DOCKER_HOST
# is set or `docker info` answers (see lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
run=/run/aftershock-kind-docker
BRIDGE=aftershock-kind
sock=$run/docker.sock
export DOCKER_HOST=unix://$sock

log() { printf '[kind-docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

answers() { [ -S "$sock" ] && timeout 10 docker version >/dev/null 2>&1; }

lacks_sys_resource() {
  # CAP_SYS_RESOURCE is capability 24.
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  [ $(( 16#$bnd >> 24 & 1 )) -eq 0 ]
}

up() {
  if answers; then return 0; fi
  if [ ! -x /usr/sbin/dockerd ] || ! command -v docker >/dev/null; then
    [ "$(id -u)" = 0 ] || die "docker.io is missing and only root may install it"
    log "installing Debian's docker.io"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    # The package starts the system's own dockerd (docker0, iptables): this project does not want it.
    systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
  fi
  mkdir -p "$run" "$cache/kind-docker"
  # kind mounts the host's /lib/modules into every node, and Docker makes the folder when it is
  # missing (kernels without modules, as in this VM): remember to take it away again.
  [ -e /lib/modules ] || touch "$run/made-lib-modules"
  local runtime=()
  if lacks_sys_resource; then
    runtime=(--add-runtime "kind-runc=$here/runc-wrapper.py" --default-runtime kind-runc)
    log "this machine lacks CAP_SYS_RESOURCE: runc runs through runc-wrapper.py"
  fi
  log "starting dockerd (socket $sock)"
  setsid /usr/sbin/dockerd --data-root "$cache/kind-docker" --exec-root "$run/exec" \
    -H "$DOCKER_HOST" --pidfile "$run/dockerd.pid" \
    --bridge=none --ip-masq=false --ip-forward=false --dns 127.0.0.1 \
    "${runtime[@]}" >"$cache/kind-docker.log" 2>&1 </dev/null &
  local ok=0
  for _ in $(seq 1 150); do answers && { ok=1; break; }; sleep 0.2; done
  if [ $ok = 0 ]; then
    tail -20 "$cache/kind-docker.log" >&2
    die "dockerd did not start (log: $cache/kind-docker.log)"
  fi
  if ! docker network inspect kind >/dev/null 2>&1; then
    docker network create -d bridge -o com.docker.network.bridge.name=$BRIDGE \
      -o com.docker.network.bridge.enable_ip_masquerade=false -o com.docker.network.driver.mtu=1500 \
      kind >/dev/null
  fi
  iptables -C DOCKER-USER -i $BRIDGE ! -o $BRIDGE -j DROP 2>/dev/null \
    || iptables -I DOCKER-USER -i $BRIDGE ! -o $BRIDGE -j DROP
}

# Every rule that jumps to a DOCKER chain or names the bridge, then the DOCKER chains.
delete_docker_iptables() {
  local table line
  for table in filter nat; do
    iptables -t $table -S | grep -E '^-A ' | grep -E -- "-j DOCKER|$BRIDGE" | grep -vE '^-A DOCKER' \
      | while read -r line; do
        # shellcheck disable=SC2086 # the rule's own words
        iptables -t $table ${line/-A /-D }
      done
    for chain in $(iptables -t $table -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t $table -F "$chain"
    done
    for chain in $(iptables -t $table -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t $table -X "$chain"
    done
  done
}

other_dockerd_with_iptables() {
  local p args
  for p in $(pgrep -x dockerd); do
    args=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue  # gone meanwhile
    [ -z "$args" ] || [[ "$args" == *--iptables=false* ]] || return 0
  done
  return 1
}

down() {
  if answers; then
    local left
    left=$(docker ps -aq --filter label=io.x-k8s.kind.cluster)
    # shellcheck disable=SC2086 # container ids
    [ -z "$left" ] || docker rm -f -v $left >/dev/null
    # kind deletes its nodes but keeps its network; this daemon exists only for kind.
    docker network rm kind >/dev/null 2>&1 || true
  fi
  local pid
  pid=$(cat "$run/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && die "dockerd ($pid) did not stop"
  fi
  # The network's bridge goes with the network; a daemon killed hard would leave it behind.
  [ -e "/sys/class/net/$BRIDGE" ] && ip link delete "$BRIDGE"
  if other_dockerd_with_iptables; then
    log "another dockerd with iptables runs on this host: the DOCKER* chains are left to it"
  else
    delete_docker_iptables
  fi
  if [ -f "$run/made-lib-modules" ] && [ -d /lib/modules ]; then
    rmdir /lib/modules 2>/dev/null || log "/lib/modules is not empty any more: left as it is"
  fi
  rm -rf "$run"
  log "dockerd stopped"
}

# The node image: the root filesystem hack/kind/node/build.sh made, imported once per content key.
load() {
  local rootfs name
  rootfs=$(nice -n 19 "$here/node/build.sh" node)
  name="aftershock.local/kind-node:$(basename "$rootfs" | sed 's/^rootfs-node-//')"
  if ! docker image inspect "$name" >/dev/null 2>&1; then
    log "importing the node image $name"
    tar -C "$rootfs" --exclude=./.complete -c . | docker import \
      --change 'ENV container=docker' \
      --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' - "$name" >/dev/null
  fi
  # Older node images (~2 GB each) go, unless a node still runs one.
  local old
  for old in $(docker images --format '{{.Repository}}:{{.Tag}}' aftershock.local/kind-node); do
    [ "$old" = "$name" ] || docker rmi "$old" >/dev/null 2>&1 || true
  done
  echo "$name"
}

case "${1:-}" in
  up) up; echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  down) down ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  load) up; load ;;
  *) echo "usage: $0 up|down|env|load" >&2; exit 2 ;;
esac
