#!/usr/bin/env bash
# The local test bed: a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, all built from Go modules) with kwok
# simulating three nodes. Started by kwokctl's binary runtime with local binaries
# only (nothing is downloaded).
#
#   hack/testbed/cluster.sh up      build if needed, start (idempotent), print kubeconfig path
#   hack/testbed/cluster.sh down    stop and delete the cluster
#   hack/testbed/cluster.sh status  exit 0 when the cluster answers
#   hack/testbed/cluster.sh env     print shell exports (KUBECONFIG, PATH with kubectl)
#   hack/testbed/cluster.sh audit-log  print the path of the API server's audit log
#   hack/testbed/cluster.sh audit-webhook  print "PORT TOKEN_FILE CERT KEY" of the API server's
#                                   audit webhook: it sends audit.k8s.io/v1 batches (max wait 1 s)
#                                   to https://127.0.0.1:PORT/audit (a receiver serving CERT/KEY)
#                                   with that bearer token; the port is the e2e operator's
#                                   (AFTERSHOCK_AUDIT_WEBHOOK_PORT, default 18471 for this cluster,
#                                   18472+ for named ones)
#   AFTERSHOCK_CLUSTER_NAME=x ...   another, independent cluster (state in ~/.cache/aftershock/clusters/x)
#   A running cluster whose configuration (the kwokctl flags below, manifests/kwokctl.yaml, the
#   audit policy and webhook) differs from the one it was made with is made again by `up`,
#   unless AFTERSHOCK_KEEP_CLUSTER=1: a cluster shared by several checkouts is kept as it runs
#   (with a warning), so that an older checkout's tests do not remake it under a newer one's.
#   AFTERSHOCK_REAL_NODE=auto|1|0   the real node (realnode.sh: containerd + kubelet, node real-0)
#                                   beside the kwok nodes. auto (default): on for the default
#                                   cluster when this machine can host it (root, Debian), with the
#                                   reason printed when it cannot; 1: required; 0: off. Another
#                                   cluster's node (AFTERSHOCK_REAL_NODE=1 with a name) is a second
#                                   instance with its own containerd, kubelet, bridge and cgroups
#                                   (realnode.sh, AFTERSHOCK_REAL_NODE_INSTANCE=<cluster name>).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
name=${AFTERSHOCK_CLUSTER_NAME:-aftershock}
# The default cluster keeps the documented kubeconfig path; other names (e.g. the reliability
# suite's own cluster, whose API server and etcd it restarts) live beside it.
if [ "$name" = aftershock ]; then
  state="$cache/cluster"
else
  state="$cache/clusters/$name"
fi
kubeconfig="$state/kubeconfig"
# Another cluster's real node is an instance of its own (realnode.sh), named after the cluster.
if [ "$name" != aftershock ]; then export AFTERSHOCK_REAL_NODE_INSTANCE="$name"; fi
# Whether this cluster's real node has state to remove (the default's: always try).
# The default cluster's second real node, real-1 (node_failure's e2e), when it was made.
real_1() {
  local env=(AFTERSHOCK_REAL_NODE_INSTANCE=real-1 AFTERSHOCK_REAL_NODE_NAME=real-1)
  [ -d "$(env "${env[@]}" "$here/realnode.sh" state-dir)" ] || return 0
  env "${env[@]}" "$here/realnode.sh" "$@"
}
node_made() { [ "$name" = aftershock ] || [ -d "$("$here/realnode.sh" state-dir)" ]; }
export KWOK_WORKDIR="$state/kwok"
# The audit webhook (docs/remediator.md): a fixed loopback port per cluster, so a named
# cluster's API server never sends its audit to an operator of the default one. While no
# operator listens there (most of the time), the API server retries each batch briefly
# (initial backoff 500 ms) and then writes the events it could not deliver into
# kube-apiserver.log ("AUDIT: ..." lines, about a quarter of audit.log's growth).
if [ "$name" = aftershock ]; then default_audit_port=18471; else
  default_audit_port=$((18472 + $(printf '%s' "$name" | cksum | cut -d' ' -f1) % 500))
fi
audit_port=${AFTERSHOCK_AUDIT_WEBHOOK_PORT:-$default_audit_port}
audit_token="$state/audit-webhook.token"
audit_kubeconfig="$state/audit-webhook.kubeconfig"
audit_cert="$state/audit-receiver.crt"
audit_key="$state/audit-receiver.key"

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() { "$here/build.sh"; }

answers() {
  [ -f "$kubeconfig" ] && "$1/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s \
    get --raw /readyz >/dev/null 2>&1
}

# The webhook's kubeconfig, token and the receiver's certificate (made once, kept across
# recreations). HTTPS because client-go sends a kubeconfig's credentials over TLS only: over
# plain http the API server would post without the token.
audit_webhook_files() {
  mkdir -p "$state"
  if [ ! -s "$audit_token" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$audit_token")
  fi
  if [ ! -s "$audit_cert" ] || [ ! -s "$audit_key" ]; then
    (umask 077; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=aftershock-audit-receiver" -addext "subjectAltName=IP:127.0.0.1" \
      -keyout "$audit_key" -out "$audit_cert" 2>/dev/null)
  fi
  (umask 077; cat >"$audit_kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: aftershock-audit-receiver
    cluster:
      server: https://127.0.0.1:$audit_port/audit
      certificate-authority: $audit_cert
users:
  - name: kube-apiserver
    user:
      token: $(cat "$audit_token")
contexts:
  - name: audit
    context: {cluster: aftershock-audit-receiver, user: kube-apiserver}
current-context: audit
EOF
  )
}

# What the cluster is started with that a running one must match: the audit policy, the
# webhook's kubeconfig, kwokctl's configuration file and this script's kwokctl arguments.
config_stamp() {
  cat "$here/manifests/audit-policy.yaml" "$audit_kubeconfig" "$here/manifests/kwokctl.yaml" \
    <(sed -n '/kwokctl --name "$name" create cluster/,/--wait/p' "$0") | sha256sum | cut -d' ' -f1
}

up() {
  local bin start=$SECONDS stamp_file="$KWOK_WORKDIR/clusters/$name/aftershock-config.sha"
  bin=$(bin_dir)
  export PATH="$bin:$PATH"   # kwokctl runs kubectl from PATH
  audit_webhook_files
  if answers "$bin" && [ "$(cat "$stamp_file" 2>/dev/null)" != "$(config_stamp)" ]; then
    if [ "${AFTERSHOCK_KEEP_CLUSTER:-}" = 1 ]; then
      log "cluster '$name' runs with another configuration than this checkout's (kwokctl flags," \
        "kwokctl.yaml, audit policy or webhook); kept (AFTERSHOCK_KEEP_CLUSTER=1): run" \
        "cluster.sh down, then up, to apply it"
    else
      log "cluster '$name' runs with another configuration than this checkout's: recreating it"
      down
    fi
  fi
  if answers "$bin"; then
    log "cluster '$name' already running"
  else
    if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
      # A cluster from an earlier boot (processes gone) or a half-made one: start over,
      # a test bed has nothing worth keeping.
      log "removing stale cluster state"
      kwokctl --name "$name" delete cluster >/dev/null 2>&1 || true
      rm -rf "$KWOK_WORKDIR/clusters/$name"
    fi
    mkdir -p "$state"
    rm -f "$kubeconfig"
    # A new cluster has a new CA: a kubelet of an earlier one cannot join it.
    if [ "$name" = aftershock ]; then real_1 down 2>/dev/null || true; fi
    if node_made; then "$here/realnode.sh" down 2>/dev/null || true; fi
    log "starting cluster '$name' (kwokctl, binary runtime, local binaries)"
    # Every component's extra flags are in kwokctl.yaml (leader election off, kwok's node
    # selection, ...), the API server's audit webhook flags (paths of this cluster's) here.
    # kwokctl 0.8 files a repeated component's later --extra-args by the position of its first
    # one among all of them, which misplaces flags or panics unless the k-th component named
    # first appears as the k-th --extra-args: here they are all the API server's.
    # A failed node is seen NotReady in about 30 s instead of kwokctl's 200 s (its default
    # --heartbeat-factor 5), so a node_failure trial (issue 20's e2e runs ten) lasts about a
    # minute and a half, not five: factor 0.75 gives the controller-manager
    # --node-monitor-grace-period=30s and --node-monitor-period=3.75s, and the kwok nodes a lease
    # of 14 x 0.75 = 10 s, renewed every 2.5 s (a quarter, as a kubelet does); the real nodes'
    # kubelets renew as often (realnode.sh). Twelve renewals fit in the grace period: at load
    # 20-33 no live node went NotReady, and a stopped kubelet was seen in 30-31 s (a watch of
    # every node's Ready condition, docs/remediator.md). Command-line flags, not kwokctl.yaml:
    # kwokctl applies the factor to its command line's options.
    kwokctl --name "$name" create cluster \
      --config "$here/manifests/kwokctl.yaml" \
      --runtime binary \
      --heartbeat-factor 0.75 \
      --node-lease-duration-seconds 14 \
      --kubeconfig "$kubeconfig" \
      --etcd-binary "$bin/etcd" \
      --kube-apiserver-binary "$bin/kube-apiserver" \
      --kube-controller-manager-binary "$bin/kube-controller-manager" \
      --kube-scheduler-binary "$bin/kube-scheduler" \
      --kwok-controller-binary "$bin/kwok" \
      --kube-authorization=true \
      --kube-admission=true \
      --kube-audit-policy "$here/manifests/audit-policy.yaml" \
      --extra-args kube-apiserver=audit-webhook-config-file="$audit_kubeconfig" \
      --extra-args kube-apiserver=audit-webhook-version=audit.k8s.io/v1 \
      --extra-args kube-apiserver=audit-webhook-mode=batch \
      --extra-args kube-apiserver=audit-webhook-batch-max-wait=1s \
      --extra-args kube-apiserver=audit-webhook-initial-backoff=500ms \
      --wait 120s >&2
    config_stamp >"$stamp_file"
  fi
  local k=(kubectl --kubeconfig "$kubeconfig")
  "${k[@]}" apply -f "$here/manifests/nodes.yaml" -f "$here/manifests/storage.yaml" >/dev/null
  "${k[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null
  # The default ServiceAccount appears asynchronously; tests that create pods need it.
  for _ in $(seq 1 60); do
    "${k[@]}" -n default get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  if want_real_node; then
    "$here/realnode.sh" up "$kubeconfig" "$KWOK_WORKDIR/clusters/$name/pki"
  fi
  log "cluster ready in $((SECONDS - start))s: KUBECONFIG=$kubeconfig"
  echo "$kubeconfig"
}

# Whether this cluster gets the real node; says why not when it was wanted.
want_real_node() {
  local mode=${AFTERSHOCK_REAL_NODE:-auto} why
  [ "$mode" != 0 ] || return 1
  if [ "$mode" = auto ] && [ "$name" != aftershock ]; then return 1; fi
  if why=$("$here/realnode.sh" can); then return 0; fi
  if [ "$mode" = 1 ]; then
    log "the real node was required (AFTERSHOCK_REAL_NODE=1) but cannot run here: $why"
    exit 1
  fi
  log "no real node: $why (kwok nodes only; real-node tests are deselected)"
  return 1
}

down() {
  local bin
  bin=$(bin_dir)
  export PATH="$bin:$PATH"
  # real-1 (opt-in, started by the tests that need it: realnode.sh) goes with the default cluster.
  if [ "$name" = aftershock ]; then real_1 down; fi
  if node_made; then
    "$here/realnode.sh" down
  fi
  if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
    kwokctl --name "$name" delete cluster >&2 || true
  fi
  rm -rf "$KWOK_WORKDIR/clusters/$name" "$kubeconfig"
  log "cluster '$name' removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) answers "$(bin_dir)" ;;
  audit-log) echo "$KWOK_WORKDIR/clusters/$name/logs/audit.log" ;;
  audit-webhook)
    audit_webhook_files
    if [ "$(cat "$KWOK_WORKDIR/clusters/$name/aftershock-config.sha" 2>/dev/null)" != "$(config_stamp)" ]; then
      log "cluster '$name' was started without this audit webhook configuration: run cluster.sh down, then up"
      exit 3
    fi
    echo "$audit_port $audit_token $audit_cert $audit_key"
    ;;
  env)
    bin=$(bin_dir)
    echo "export KUBECONFIG=$kubeconfig"
    echo "export PATH=$bin:\$PATH"
    ;;
  *) echo "usage: $0 up|down|status|env|audit-log|audit-webhook" >&2; exit 2 ;;
esac
