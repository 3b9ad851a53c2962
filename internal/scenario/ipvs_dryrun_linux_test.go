package scenario_test

import (
	"context"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// TestGuestIPVSDryRun checks the executable dry run of IPVS mode: the
// printed plan — "ipset restore" input, "ip -batch" input for kube-ipvs0
// and its addresses, "ipvsadm -R" input and each family's
// iptables-restore input — loaded with the standard tools into one fresh
// namespace, and the same plan applied by the netlink appliers (and
// iptables.Kernel) in another, give the same "ipvsadm -S -n" output, the
// same "ipset save" output and the same addresses on kube-ipvs0
// (normalised: lines sorted, the kernel's random initval and the ipset
// tool's default bucketsize dropped), and the
// same iptables-save output but for the applier's canary chain; both
// match the plan.
func TestGuestIPVSDryRun(t *testing.T) {
	requireIPVS(t)
	for _, tc := range []struct {
		name string
		st   proxy.State
	}{
		{"example-cluster", exampleState(t)},
		{"dual-stack", dualStackState()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := compileIPVS(t, &tc.st)
			raw := netnstest.NewNS(t)
			loadText(t, raw, p)
			applied := netnstest.NewNS(t)
			n := newIPVSNode(t, netnsPath(applied))
			n.apply(t, p)
			rawState, appliedState := kernelText(t, raw, p), kernelText(t, applied, p)
			if diff := cmp.Diff(rawState, appliedState); diff != "" {
				t.Errorf("after the standard tools and after the appliers (-tools +appliers):\n%s", diff)
			}
			checkIPVSMatchesPlan(t, applied, p)
		})
	}
}

// dualStackState returns a State with both families and every kind of
// IPVS-mode object: a ClusterIP service with ClientIP affinity, a UDP
// NodePort, an external IP, a LoadBalancer with source ranges under the
// Local policy, and a service without endpoints.
func dualStackState() proxy.State {
	ep := func(addr, node string) proxy.Endpoint {
		return proxy.Endpoint{Addr: netip.MustParseAddr(addr), Ports: []proxy.EndpointPort{{Port: 8080}}, Ready: true, NodeName: node}
	}
	ips := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	web := proxy.Service{
		Namespace: "dry", Name: "web", ClusterIPs: ips("10.96.1.1", "fd00:96::1:1"), SessionAffinity: proxy.SessionAffinityClientIP,
		Ports:       []proxy.ServicePort{{Port: 80, TargetPort: 8080}},
		ExternalIPs: ips("198.51.100.9"),
		Endpoints: []proxy.Endpoint{ep("10.244.0.5", "node-a"), ep("10.244.1.5", "node-b"),
			ep("fd00:244::5", "node-a"), ep("fd00:244:1::5", "node-b")},
	}
	dns := proxy.Service{
		Namespace: "dry", Name: "dns", Type: proxy.ServiceTypeNodePort, ClusterIPs: ips("10.96.1.2"),
		Ports:     []proxy.ServicePort{{Protocol: proxy.ProtocolUDP, Port: 53, TargetPort: 8080, NodePort: 30053}},
		Endpoints: []proxy.Endpoint{ep("10.244.0.6", "node-a")},
	}
	lb := proxy.Service{
		Namespace: "dry", Name: "lb", Type: proxy.ServiceTypeLoadBalancer, ClusterIPs: ips("10.96.1.3"),
		Ports:                    []proxy.ServicePort{{Port: 443, TargetPort: 8080, NodePort: 30443}},
		LoadBalancerIPs:          ips("192.0.2.30"),
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.0.0.0/8")},
		ExternalTrafficPolicy:    proxy.TrafficPolicyLocal,
		HealthCheckNodePort:      31000,
		Endpoints:                []proxy.Endpoint{ep("10.244.0.7", "node-a"), ep("10.244.1.7", "node-b")},
	}
	empty := proxy.Service{
		Namespace: "dry", Name: "empty", ClusterIPs: ips("10.96.1.4"),
		Ports: []proxy.ServicePort{{Port: 80, TargetPort: 8080}},
	}
	return proxy.State{
		Node: proxy.Node{Name: "node-a", IPs: ips("10.0.0.10", "fd00:10::10")},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"),
			netip.MustParsePrefix("fd00:244::/32")}},
		Services: []proxy.Service{web, dns, lb, empty},
	}
}

// loadText loads p's text forms into ns with the standard tools.
func loadText(t *testing.T, ns *netnstest.NS, p *translate.Plan) {
	t.Helper()
	runStdin(t, ns, p.IPSets.String(), "ipset", "restore")
	runStdin(t, ns, p.IPVS.AddressText(), "ip", "-batch", "-")
	runStdin(t, ns, p.IPVS.String(), "ipvsadm", "-R")
	for _, r := range p.IPTables {
		restore(t, ns, r, "--noflush")
	}
}

// runStdin runs name with args in ns, stdin on its standard input; it
// fails t if the command fails.
func runStdin(t testing.TB, ns *netnstest.NS, stdin, name string, args ...string) {
	t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v in %s: %v: %s\ninput:\n%s", name, args, ns, err, out, stdin)
	}
}

// ipvsKernelText is what a namespace holds in IPVS mode, as the standard
// tools print it, normalised.
type ipvsKernelText struct {
	IPVS      []string
	IPSets    []string
	Addresses []string
	IPTables  map[iptables.Family]string
}

// hashOptions matches the create options of "ipset save" that differ
// between sets alike: the random hash seed (initval), and the bucket size
// the ipset tool always sends (its default, 12, the kernel's default too,
// which the kernel prints only when it was sent, as the netlink applier
// does not).
var hashOptions = regexp.MustCompile(` (initval 0x[0-9a-f]+|bucketsize 12)\b`)

// kernelText reads what ns holds: "ipvsadm -S -n" and "ipset save" lines
// sorted (without hashOptions), the addresses of kube-ipvs0 sorted, and
// each family of p's iptables-save output normalised, without the
// iptables applier's canary chain.
func kernelText(t *testing.T, ns *netnstest.NS, p *translate.Plan) ipvsKernelText {
	t.Helper()
	k := ipvsKernelText{
		IPVS:      sortedLines(execIn(t, ns, "ipvsadm", "-S", "-n")),
		IPSets:    sortedLines(hashOptions.ReplaceAllString(execIn(t, ns, "ipset", "save"), "")),
		Addresses: linkAddrs(t, ns, p.IPVS.InterfaceOrDefault()),
		IPTables:  map[iptables.Family]string{},
	}
	for _, r := range p.IPTables {
		f := r.FamilyOrDefault()
		k.IPTables[f] = iptables.Normalize(withoutChain(save(t, ns, f), iptables.CanaryChain(iptables.DefaultOwnerPrefix)))
	}
	return k
}

// sortedLines returns the non-empty lines of text, sorted.
func sortedLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// linkAddrs returns the global addresses on iface in ns, with their
// prefix lengths, sorted.
func linkAddrs(t *testing.T, ns *netnstest.NS, iface string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(execIn(t, ns, "ip", "-o", "addr", "show", "dev", iface), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" && f[i] != "inet6" {
				continue
			}
			if pr, err := netip.ParsePrefix(f[i+1]); err == nil && !pr.Addr().IsLinkLocalUnicast() {
				out = append(out, pr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// checkIPVSMatchesPlan checks that what the appliers made in ns is p:
// "ipvsadm -S -n" parses back to p's virtual servers, "ipset save" to
// p's sets, and kube-ipvs0 holds p's addresses as host routes.
func checkIPVSMatchesPlan(t *testing.T, ns *netnstest.NS, p *translate.Plan) {
	t.Helper()
	got, err := ipvs.ParseSave(execIn(t, ns, "ipvsadm", "-S", "-n"))
	if err != nil {
		t.Fatalf("ParseSave(ipvsadm -S -n) = %v", err)
	}
	want := slices.Clone(p.IPVS.VirtualServers)
	for i := range want {
		want[i].Scheduler = want[i].SchedulerOrDefault()
	}
	if diff := cmp.Diff(want, got.VirtualServers, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
		t.Errorf("virtual servers in the kernel differ from the plan's (-plan +kernel):\n%s", diff)
	}
	var wantAddrs []string
	for _, a := range p.IPVS.Addresses {
		wantAddrs = append(wantAddrs, netip.PrefixFrom(a, a.BitLen()).String())
	}
	slices.Sort(wantAddrs)
	if diff := cmp.Diff(wantAddrs, linkAddrs(t, ns, p.IPVS.InterfaceOrDefault()), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("addresses of %s differ from the plan's (-plan +kernel):\n%s", p.IPVS.InterfaceOrDefault(), diff)
	}
	sets, err := ipset.ParseSave(execIn(t, ns, "ipset", "save"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sets.Sets) != len(p.IPSets.Sets) {
		t.Fatalf("ipset save shows %d sets, want the plan's %d", len(sets.Sets), len(p.IPSets.Sets))
	}
	for i := range p.IPSets.Sets {
		w := &p.IPSets.Sets[i]
		if g := sets.Set(w.Name); g == nil || !w.Equal(g) {
			t.Errorf("set %s in the kernel = %+v, want %+v", w.Name, g, w)
		}
	}
}
