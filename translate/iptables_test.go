package translate

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/proxy"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const testNode = "node1"

// baseState is the node most golden tests use: one IPv4 address, the pod
// network 10.0.0.0/8.
func baseState(svcs ...proxy.Service) *proxy.State {
	return &proxy.State{
		Node:     proxy.Node{Name: testNode, IPs: addrs("192.168.0.2")},
		Config:   proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		Services: svcs,
	}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// ep returns a ready endpoint at addr with one port; mods adjust it.
func ep(addr, portName string, port int, mods ...func(*proxy.Endpoint)) proxy.Endpoint {
	e := proxy.Endpoint{
		Addr:    netip.MustParseAddr(addr),
		Ports:   []proxy.EndpointPort{{Name: portName, Port: port}},
		Ready:   true,
		Serving: true,
	}
	for _, m := range mods {
		m(&e)
	}
	return e
}

func local(e *proxy.Endpoint) { e.NodeName = testNode }

func remote(e *proxy.Endpoint) { e.NodeName = "node2" }

func terminating(e *proxy.Endpoint) { e.Ready, e.Terminating = false, true }

func notReady(e *proxy.Endpoint) { e.Ready, e.Serving = false, false }

func zoneHints(zones ...string) func(*proxy.Endpoint) {
	return func(e *proxy.Endpoint) { e.ZoneHints = zones }
}

// clusterIP returns a ClusterIP service with one TCP port named p80.
func clusterIP(ns, name, ip string, eps ...proxy.Endpoint) proxy.Service {
	return proxy.Service{
		Namespace:  ns,
		Name:       name,
		ClusterIPs: addrs(ip),
		Ports:      []proxy.ServicePort{{Name: "p80", Protocol: proxy.ProtocolTCP, Port: 80}},
		Endpoints:  eps,
	}
}

func withType(s proxy.Service, t proxy.ServiceType, nodePort int) proxy.Service {
	s.Type = t
	s.Ports[0].NodePort = nodePort
	return s
}

type goldenCase struct {
	name string
	st   *proxy.State
	opts []Option
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{name: "clusterip", st: baseState(
			clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)),
		)},
		{name: "multiple-endpoints", st: baseState(
			clusterIP("ns1", "svc1", "172.30.0.41",
				ep("10.180.0.3", "p80", 80), ep("10.180.0.1", "p80", 80), ep("10.180.0.2", "p80", 80),
				ep("10.180.0.10", "p80", 80), ep("10.180.0.4", "p80", 8080, notReady)),
		)},
		{name: "affinity", st: affinityState()},
		{name: "nodeport", st: baseState(
			withType(clusterIP("ns3", "svc3", "172.30.0.43", ep("10.180.0.3", "p80", 80)), proxy.ServiceTypeNodePort, 30003),
		)},
		{name: "externalip", st: externalIPState()},
		{name: "loadbalancer", st: loadBalancerState()},
		{name: "local-traffic-policy", st: localPolicyState()},
		{name: "no-endpoints", st: noEndpointsState()},
		{name: "terminating-fallback", st: terminatingState()},
		{name: "topology-hints", st: topologyState()},
		{name: "masquerade-all", st: masqueradeAllState()},
		{name: "no-cluster-cidr", st: noClusterCIDRState()},
		{name: "nodeport-addresses", st: nodePortAddressesState()},
		{name: "dual-stack", st: dualStackState()},
		{name: "large-cluster", st: baseState(
			clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80), ep("10.180.0.2", "p80", 80)),
			clusterIP("ns2", "svc2", "172.30.0.42", ep("10.180.0.3", "p80", 80)),
		), opts: []Option{WithLargeClusterThreshold(2)}},
		{name: "health-check-nodeport", st: healthCheckState()},
		{name: "unnamed-port", st: unnamedPortState()},
		{name: "sctp-udp", st: protocolsState()},
		{name: "conntrack-tcp-liberal", st: baseState(), opts: []Option{WithConntrackTCPLiberal()}},
		{name: "empty", st: &proxy.State{}},
	}
}

func TestCompileGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := compileText(t, tc.st, tc.opts...)
			checkGolden(t, filepath.Join("testdata", tc.name+".golden"), got, "Compile("+tc.name+")")
		})
	}
}

// compileText compiles st and returns the text of its iptables plans, each
// preceded by a comment line naming its family. Every plan must pass
// Plan.Validate.
func compileText(t *testing.T, st *proxy.State, opts ...Option) string {
	t.Helper()
	p, err := Compile(st, ModeIPTables, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	var b strings.Builder
	for _, ip := range p.IPTables {
		if err := ip.Validate(); err != nil {
			t.Errorf("%s plan does not validate: %v", ip.FamilyOrDefault(), err)
		}
		b.WriteString("# " + string(ip.FamilyOrDefault()) + "\n")
		b.WriteString(ip.String())
	}
	return b.String()
}

// checkGolden compares got with the golden file at path, or rewrites the
// file under -update; what names the compilation in the failure message.
func checkGolden(t *testing.T, path, got, what string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s text mismatch (-want +got):\n%s", what, diff)
	}
}
