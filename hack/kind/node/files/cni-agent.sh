#!/bin/sh
# The kind node image's CNI agent (a DaemonSet from /kind/manifests/default-cni.yaml), built here
# because kind's own, kindnetd, is not served by the Go module proxy. It does the part of kindnetd's
# job that a cluster on one Docker bridge needs:
#   - writes the node's CNI config: ptp + host-local over the node's spec.podCIDR (kindnetd's
#     config; the plugins are Debian's containernetworking-plugins in the node image);
#   - routes every other node's podCIDR via that node's InternalIP (all nodes share one bridge).
# No masquerading and no network policy: pods reach pods, nodes and Services, nothing outside.
# Nodes come and go rarely; a list every 10 s is what kindnetd's own resync does.
set -u
: "${NODE_NAME:?NODE_NAME must be set (downward API spec.nodeName)}"
conf=/etc/cni/net.d/10-kindnet.conflist
export HOME=/tmp
while true; do
  if kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' >/tmp/nodes.new 2>/tmp/kubectl.err; then
    while read -r name cidr ip; do
      [ -n "$cidr" ] && [ -n "$ip" ] || continue
      if [ "$name" = "$NODE_NAME" ]; then
        cat >/tmp/conf.new <<CONF
{
  "cniVersion": "0.4.0",
  "name": "kindnet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "$cidr"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF
        if ! cmp -s /tmp/conf.new "$conf"; then
          cp /tmp/conf.new "$conf.tmp" && mv "$conf.tmp" "$conf" && echo "wrote $conf for $cidr"
        fi
      elif ! ip route show "$cidr" | grep -q "via $ip "; then
        ip route replace "$cidr" via "$ip" && echo "route $cidr via $ip ($name)"
      fi
    done </tmp/nodes.new
  else
    echo "listing nodes failed: $(cat /tmp/kubectl.err)"
  fi
  sleep 10
done
