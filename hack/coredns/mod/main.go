// A CoreDNS with only the plugins a cluster's DNS uses, built as CoreDNS documents for builds with
// external plugins (https://coredns.io/2017/07/25/compile-time-enabling-or-disabling-plugins/):
// the imports register the plugins, dnsserver.Directives says which Corefile directives exist and
// in which order they run. The order below is upstream's plugin.cfg order (v1.14.3) with the other
// plugins left out; a Corefile that names a plugin not listed here is refused at start-up
// ("Unknown directive"), never silently ignored. Why: upstream's main imports every plugin, and
// the cloud ones (route53, azure, clouddns, dnstap, etcd, geoip, ...) bring SDKs that cost minutes
// of a cold build on 2 cores (docs/adr/0014-kind-node-image.md).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// kubeadm's default Corefile (v1.36): errors, health, ready, kubernetes, prometheus, forward,
	// cache, loop, reload, loadbalance.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	// Small ones a test bed's Corefile may want (no dependencies beyond CoreDNS's own).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// Upstream's order (core/dnsserver/zdirectives.go of v1.14.3), only the plugins imported above.
var directives = []string{
	"reload",
	"bind",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"rewrite",
	"template",
	"hosts",
	"kubernetes",
	"loop",
	"forward",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
