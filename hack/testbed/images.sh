#!/usr/bin/env bash
# Images for the real node, built here with no registry, cached in ~/.cache/aftershock/images.
#
#   images.sh operator   the operator image, from the project's own Dockerfile, by a real image
#                        builder (Debian's docker.io: dockerd on a private socket, legacy builder,
#                        --network none), base chosen by the Dockerfile's PYTHON_IMAGE argument
#   images.sh subjects   registry.local/shell:local (busybox), registry.local/etcd:local (the test
#                        bed's etcd on the shell image), registry.local/python:local (Debian +
#                        python3: runs the TiKV store stand-in)
#                        docker.io/library/aftershock-netutils:dev (Debian minbase + iptables:
#                        network_partition's ephemeral container, its default chaos.image)
#   images.sh netutils   only that one
#   images.sh all        both; then import what the node lacks (realnode.sh import)
#   images.sh import-subjects  the subject images only, imported likewise
#   AFTERSHOCK_REAL_NODE_INSTANCE=x ...  into that cluster's own node (realnode.sh)
#   images.sh base       only the Debian root filesystem (debootstrap, cached)
#   images.sh shell      only the busybox root filesystem (the kind node's images use it too)
#
# Every archive is rebuilt only when its inputs change (a hash of them names the archive).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
# shellcheck source=versions.env
. "$here/versions.env"
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
out="$cache/images"
python=${PYTHON:-python3}
mkdir -p "$out"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SUITE=bookworm
BASE_NAME=aftershock-base:$SUITE

ensure_packages() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
  [ -x /bin/busybox ] && /bin/busybox --list | grep -qx wget || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing from Debian: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A Debian root filesystem with Python: the base of the operator image (what python:3.11-slim
# is elsewhere) and of the store stand-in's image.
base_rootfs() {
  local dir="$out/rootfs-$SUITE"
  if [ ! -f "$dir/.complete" ]; then
    log "debootstrap $SUITE (minbase + python3; ~1 min)"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      "$SUITE" "$dir.tmp" >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; exit 1; }
    # Nothing in the image needs apt's lists or caches.
    rm -rf "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/var/cache/apt/*
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# Debian's iptables (nf_tables backend) on minbase (dash, coreutils, grep): what
# network_partition's container runs. Built here like the base, never pulled.
NETUTILS_NAME=docker.io/library/aftershock-netutils:dev
netutils_image() {
  local dir="$out/rootfs-netutils-$SUITE" a="$out/netutils-$SUITE.tar"
  if [ ! -f "$dir/.complete" ]; then
    log "debootstrap $SUITE (minbase + iptables; ~1 min)"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase --include=iptables "$SUITE" "$dir.tmp" >"$out/debootstrap-netutils.log" 2>&1 \
      || { tail -20 "$out/debootstrap-netutils.log" >&2; exit 1; }
    rm -rf "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/var/cache/apt/* "$dir.tmp"/usr/share/doc/* \
      "$dir.tmp"/usr/share/man/* "$dir.tmp"/usr/share/locale/*
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  fi
  [ -f "$a" ] || { mkimage "$dir" "$NETUTILS_NAME" "$a" --cmd sh; log "built $NETUTILS_NAME"; }
  echo "$a"
}

hash_of() { (cd "$repo" && sha256sum "$@" | sha256sum | cut -c1-16); }

# The docker daemon exists only while the operator image builds: private socket, data root in
# the cache (keeps the base layer), no iptables, no bridge.
docker_sock=/run/aftershock-docker/docker.sock
docker_host=${AFTERSHOCK_IMAGES_DOCKER_HOST:-unix://$docker_sock}
# AFTERSHOCK_IMAGES_DOCKER_HOST: build on that running daemon instead of starting and stopping one
# here (hack/kind/image.sh passes the kind dockerd, which then also keeps the base layer).
dockerd_up() {
  [ -z "${AFTERSHOCK_IMAGES_DOCKER_HOST:-}" ] || return 0
  mkdir -p /run/aftershock-docker "$cache/docker"
  if [ -S "$docker_sock" ] && DOCKER_HOST=unix://$docker_sock /usr/bin/docker version >/dev/null 2>&1; then
    return 0
  fi
  log "starting dockerd (private socket)"
  # Not holding the builders' lock (fd 9): a dockerd left behind by a killed build held it for
  # good, and every later build on the machine waited on it (seen: make dev and the reliability
  # suite both stuck in `flock 9` behind an orphaned dockerd).
  setsid /usr/sbin/dockerd --data-root "$cache/docker" --exec-root /run/aftershock-docker/exec \
    -H "unix://$docker_sock" --pidfile /run/aftershock-docker/dockerd.pid \
    --iptables=false --ip-masq=false --bridge=none >"$out/dockerd.log" 2>&1 < /dev/null 9>&- &
  for _ in $(seq 1 100); do
    DOCKER_HOST=unix://$docker_sock /usr/bin/docker version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "dockerd did not start: $out/dockerd.log"; exit 1
}
dockerd_down() {
  [ -z "${AFTERSHOCK_IMAGES_DOCKER_HOST:-}" ] || return 0
  local pid
  pid=$(cat /run/aftershock-docker/dockerd.pid 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

operator_image() {
  local key archive
  key=$(hash_of Dockerfile pyproject.toml README.md $(cd "$repo" && git ls-files operator))
  archive="$out/operator-$key.tar"
  # Used now: its mtime says so (the pruning below keeps what was used in the last 6 hours).
  if [ -f "$archive" ]; then touch "$archive"; echo "$archive"; return 0; fi
  local rootfs ctx
  rootfs=$(base_rootfs)
  # The build context: what .dockerignore lets through, plus the wheels. pip in a fresh image
  # cannot verify the package index's certificate here, so wheels are built on the host and
  # installed with --no-index: the offline build air-gapped users need too.
  ctx="$out/ctx-$key"
  rm -rf "$ctx" && mkdir -p "$ctx/wheels"
  (cd "$repo" && cp -r Dockerfile .dockerignore pyproject.toml README.md operator "$ctx/")
  find "$ctx/operator" -name __pycache__ -prune -exec rm -rf {} +
  log "wheels for the image (pip wheel on the host; its output in $out/wheels.log)"
  "$python" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$ctx" 'setuptools>=69' wheel \
    >"$out/wheels.log" 2>&1 || { tail -n 30 "$out/wheels.log" >&2; exit 1; }
  printf '!wheels/\n' >> "$ctx/.dockerignore"
  dockerd_up
  local docker=(env DOCKER_HOST="$docker_host" DOCKER_BUILDKIT=0 /usr/bin/docker)
  if ! "${docker[@]}" image inspect "$BASE_NAME" >/dev/null 2>&1; then
    log "importing the Debian root filesystem as $BASE_NAME"
    tar -C "$rootfs" --exclude=./.complete -c . | "${docker[@]}" import - "$BASE_NAME" >/dev/null
  fi
  log "docker build (the project's Dockerfile, PYTHON_IMAGE=$BASE_NAME, --network none)"
  "${docker[@]}" build --quiet --network none -t aftershock:dev \
    --build-arg PYTHON_IMAGE="$BASE_NAME" \
    --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /src" \
    "$ctx" >&2
  "${docker[@]}" save aftershock:dev -o "$archive.tmp"
  mv "$archive.tmp" "$archive"
  # Every change to the operator's sources makes a new ~420 MB archive; without pruning a
  # machine that runs many checkouts (CI, engineers' worktrees) filled its disk with them
  # (30 of them, 12 GB, in one day). Kept: the ones built or used in the last 6 hours, which
  # any checkout still running tests is using.
  find "$out" -maxdepth 1 -name 'operator-*.tar' ! -name "$(basename "$archive")" -mmin +360 -delete
  "${docker[@]}" image prune -f >/dev/null 2>&1 || true
  dockerd_down
  rm -rf "$ctx"
  log "operator image: $(du -h "$archive" | cut -f1)"
  echo "$archive"
}

# One-layer images from folders (mkimage.py): no daemon at all.
shell_rootfs() {
  local dir="$out/rootfs-shell"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir" && mkdir -p "$dir"/{bin,tmp,etc,data}
    cp /bin/busybox "$dir/bin/busybox"
    /bin/busybox --list | while read -r applet; do
      [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
    done
    chmod 1777 "$dir/tmp"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

mkimage() { "$python" "$here/images/mkimage.py" "$@" >/dev/null; }

subject_images() {
  local shell python_rootfs
  shell=$(shell_rootfs)
  local a="$out/shell.tar"
  [ -f "$a" ] || { mkimage "$shell" registry.local/shell:local "$a" --cmd sh; log "built registry.local/shell:local"; }
  a="$out/etcd-${ETCD_VERSION}.tar"
  [ -f "$a" ] || {
    mkimage "$shell" "registry.local/etcd:local" "$a" --add "$bin/etcd:/bin/etcd" --cmd /bin/etcd
    log "built registry.local/etcd:local (etcd ${ETCD_VERSION})"
  }
  a="$out/python-$SUITE.tar"
  [ -f "$a" ] || {
    python_rootfs=$(base_rootfs)
    mkimage "$python_rootfs" registry.local/python:local "$a" --cmd python3
    log "built registry.local/python:local"
  }
  netutils_image >/dev/null
  printf '%s\n' "$out/shell.tar" "$out/etcd-${ETCD_VERSION}.tar" "$out/python-$SUITE.tar" \
    "$out/netutils-$SUITE.tar"
}

# Archives are named by their inputs (operator-<hash>.tar, etcd-<version>.tar). A marker per
# archive in the node's state records the image digest containerd gave it at import: the
# archive is imported again when that image is missing or its name now points elsewhere
# (another checkout imported its own aftershock:dev). realnode.sh down wipes both.
# The node these images go to: real-0 of the default cluster, or of another cluster's own
# (AFTERSHOCK_REAL_NODE_INSTANCE, see realnode.sh).
node_state=$("$here/realnode.sh" state-dir)
node_socket=$("$here/realnode.sh" socket)
image_digest() { ctr --address "$node_socket" -n k8s.io images ls 2>/dev/null | awk -v n="$1" '$1 == n {print $3}'; }
archive_image() {
  # The name an archive carries: its OCI index's annotation, or docker save's RepoTags.
  "$python" - "$1" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    names = set(tar.getnames())
    if "index.json" in names:
        index = json.load(tar.extractfile("index.json"))
        print(index["manifests"][0]["annotations"]["io.containerd.image.name"])
    else:
        tag = json.load(tar.extractfile("manifest.json"))[0]["RepoTags"][0]
        print(tag if "/" in tag else "docker.io/library/" + tag)
PY
}
import_all() {
  local archive marker name
  mkdir -p "$node_state/imported"
  for archive in "$@"; do
    marker="$node_state/imported/$(basename "$archive")"
    name=$(archive_image "$archive")
    if [ -f "$marker" ] && [ -n "$name" ] && [ "$(cat "$marker")" = "$(image_digest "$name")" ]; then
      continue
    fi
    "$here/realnode.sh" import "$archive"
    image_digest "$name" > "$marker"
  done
}

# One builder at a time on this machine: the docker daemon is shared (one private socket) and
# the last build to finish stops it, so two checkouts (or `make dev` beside `make test`) building
# at once would pull it from under each other.
# What is already built is only read: no lock (the kind path asks for the shell root filesystem
# and the operator archive while other checkouts' builds hold the lock for minutes).
case "${1:-all}" in
  shell) [ -f "$out/rootfs-shell/.complete" ] && { echo "$out/rootfs-shell"; exit 0; } ;;
  base) [ -f "$out/rootfs-$SUITE/.complete" ] && { echo "$out/rootfs-$SUITE"; exit 0; } ;;
  operator)
    # shellcheck disable=SC2046 # file names from git, no spaces
    a="$out/operator-$(hash_of Dockerfile pyproject.toml README.md $(cd "$repo" && git ls-files operator)).tar"
    [ -f "$a" ] && { touch "$a"; echo "$a"; exit 0; } ;;
esac
exec 9>"$cache/images.lock"
flock 9

ensure_packages
case "${1:-all}" in
  base) base_rootfs ;;
  shell) shell_rootfs ;;
  operator) a=$(operator_image); echo "$a" ;;
  subjects) subject_images ;;
  netutils) a=$(netutils_image); import_all "$a" ;;
  all)
    archives=$(subject_images; operator_image)
    # shellcheck disable=SC2086
    import_all $archives
    # manifests/examples/etcd/ names etcd's upstream image: the node has it under that name too,
    # this etcd release built here from its module (nothing is pulled: IfNotPresent finds it).
    "$here/realnode.sh" tag registry.local/etcd:local "gcr.io/etcd-development/etcd:${ETCD_VERSION}"
    log "images imported into the real node"
    ;;
  import-subjects)
    # The subjects only (no operator image): a node whose operator runs on the host.
    archives=$(subject_images)
    # shellcheck disable=SC2086
    import_all $archives
    log "subject images imported into the real node${AFTERSHOCK_REAL_NODE_INSTANCE:+ ($AFTERSHOCK_REAL_NODE_INSTANCE)}"
    ;;
  import-operator)
    # The operator's image only: node_failure's node agent on a node whose operator runs on the host.
    a=$(operator_image)
    import_all "$a"
    log "operator image imported into the real node${AFTERSHOCK_REAL_NODE_INSTANCE:+ ($AFTERSHOCK_REAL_NODE_INSTANCE)}"
    ;;
  *) echo "usage: $0 operator|subjects|netutils|all|import-subjects|import-operator|base|shell" >&2; exit 2 ;;
esac
