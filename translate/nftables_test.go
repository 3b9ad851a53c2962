package translate

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// The expected names are kube-proxy's, from its nftables proxier_test.go.
func TestNFTablesNames(t *testing.T) {
	ep := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"service", NFTPrefixService + NFTServicePortNameBase("ns1", "svc1", "tcp", "p80"), "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{"protocol case", NFTPrefixService + NFTServicePortNameBase("ns1", "svc1", "TCP", "p80"), "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{"service 2", NFTPrefixExternal + NFTServicePortNameBase("ns2", "svc2", "tcp", "p80"), "external-42NFTM6N-ns2/svc2/tcp/p80"},
		{"service 5", NFTPrefixFirewall + NFTServicePortNameBase("ns5", "svc5", "tcp", "p80"), "firewall-HVFWP5L3-ns5/svc5/tcp/p80"},
		{"endpoint", NFTPrefixEndpoint + NFTEndpointNameBase("ns1", "svc1", "tcp", "p80", ep("10.180.0.1:80")), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"},
		{"endpoint 2", NFTPrefixEndpoint + NFTEndpointNameBase("ns2", "svc2", "tcp", "p80", ep("10.180.0.2:80")), "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"},
		{"affinity", NFTPrefixAffinity + NFTEndpointNameBase("ns5", "svc5", "tcp", "p80", ep("10.180.0.3:80")), "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"},
		{"ipv6 endpoint", NFTPrefixEndpoint + NFTEndpointNameBase("ns1", "svc1", "tcp", "p80", ep("[fd00:10:180::1]:80")), "endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80"},
		{"ipv6 endpoint 2", NFTPrefixEndpoint + NFTEndpointNameBase("ns1", "svc1", "tcp", "p80", ep("[fd00:10:180::2:1]:80")), "endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("name = %s, want %s", tt.got, tt.want)
			}
		})
	}
}

func TestNFTablesNameTruncated(t *testing.T) {
	long := strings.Repeat("a", 63)
	got := NFTEndpointNameBase(long, long, "sctp", long, netip.MustParseAddrPort("[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535"))
	if len(got) != nftNameBaseMax || !strings.HasSuffix(got, "...") {
		t.Errorf("NFTEndpointNameBase(long) = %q (%d characters), want %d ending in ...", got, len(got), nftNameBaseMax)
	}
	if n := len(NFTPrefixEndpoint + got); n > nftables.MaxNameLen {
		t.Errorf("endpoint chain name is %d characters, more than %d", n, nftables.MaxNameLen)
	}
}

// nftGoldenCases are the golden states of the iptables plans, less those
// of iptables-only options, and kube-proxy's overall test.
func nftGoldenCases() []goldenCase {
	var out []goldenCase
	for _, tc := range goldenCases() {
		if tc.name != "large-cluster" && tc.name != "conntrack-tcp-liberal" {
			out = append(out, tc)
		}
	}
	return append(out, goldenCase{name: "kube-proxy-overall", st: kubeProxyOverallState()})
}

func TestCompileNFTablesGolden(t *testing.T) {
	for _, tc := range nftGoldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := compileNFTText(t, tc.st, tc.opts...)
			checkGolden(t, filepath.Join("testdata", "nft-"+tc.name+".golden"), got, "Compile("+tc.name+", nftables)")
		})
	}
}

// compileNFTText compiles st in nftables mode and returns the text of its
// plans, each preceded by a comment line naming its family. Every plan
// must pass Plan.Validate, and every rule must read back as itself.
func compileNFTText(t *testing.T, st *proxy.State, opts ...Option) string {
	t.Helper()
	p, err := Compile(st, ModeNFTables, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	var b strings.Builder
	for _, np := range p.NFTables {
		checkNFTPlan(t, np)
		b.WriteString("# " + string(np.FamilyOrDefault()) + "\n")
		b.WriteString(np.String())
	}
	return b.String()
}

func checkNFTPlan(t *testing.T, np *nftables.Plan) {
	t.Helper()
	if err := np.Validate(); err != nil {
		t.Errorf("%s plan does not validate: %v", np.FamilyOrDefault(), err)
	}
	for i := range np.Chains {
		c := &np.Chains[i]
		for _, text := range c.Rules() {
			r, err := nftables.ParseRule(text)
			if err != nil {
				t.Errorf("chain %s: %v", c.Name, err)
				continue
			}
			if got := r.String(); got != text {
				t.Errorf("chain %s: rule %q reads back as %q", c.Name, text, got)
			}
		}
	}
}

// kubeProxyOverallState is the cluster of kube-proxy's
// TestOverallNFTablesRules.
func kubeProxyOverallState() *proxy.State {
	svc1 := clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80))
	svc2 := withType(clusterIP("ns2", "svc2", "172.30.0.42", ep("10.180.0.2", "p80", 80)), proxy.ServiceTypeLoadBalancer, 3001)
	svc2.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	svc2.LoadBalancerIPs = addrs("1.2.3.4")
	svc2.ExternalIPs = addrs("192.168.99.22")
	svc3 := withType(clusterIP("ns3", "svc3", "172.30.0.43", ep("10.180.0.3", "p80", 80)), proxy.ServiceTypeNodePort, 3003)
	svc4 := withType(clusterIP("ns4", "svc4", "172.30.0.44",
		ep("10.180.0.4", "p80", 80), ep("10.180.0.5", "p80", 80, func(e *proxy.Endpoint) { e.NodeName = "test-node" })),
		proxy.ServiceTypeNodePort, 0)
	svc4.ExternalIPs = addrs("192.168.99.33")
	svc5 := withType(clusterIP("ns5", "svc5", "172.30.0.45", ep("10.180.0.3", "p80", 80)), proxy.ServiceTypeLoadBalancer, 3002)
	svc5.ExternalTrafficPolicy = proxy.TrafficPolicyCluster
	svc5.LoadBalancerIPs = addrs("5.6.7.8")
	svc5.LoadBalancerSourceRanges = prefixes("203.0.113.0/25")
	svc5.SessionAffinity = proxy.SessionAffinityClientIP
	svc5.AffinityTimeoutSeconds = 10800
	svc6 := clusterIP("ns6", "svc6", "172.30.0.46")
	return &proxy.State{
		Node: proxy.Node{Name: "test-node", IPs: addrs("192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2")},
		Config: proxy.Config{
			ClusterCIDRs:      prefixes("10.0.0.0/8", "fd00:10::/64"),
			NodePortAddresses: prefixes("192.168.0.2/32", "2001:db8::1/128"),
			NodePortRange:     proxy.PortRange{Min: 3000, Max: 3999},
		},
		Services: []proxy.Service{svc1, svc2, svc3, svc4, svc5, svc6},
	}
}

// kubeProxyOverallServices are the per-service lines kube-proxy's
// TestOverallNFTablesRules expects, copied from its test.
const kubeProxyOverallServices = `
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
`

// TestNFTablesMatchesKubeProxy compares the per-service objects of
// kube-proxy's overall test with ours, line for line in any order. (The
// fixed part differs only in the masquerade mark's spelling: kube-proxy's
// test proxier is given "0x4000".)
func TestNFTablesMatchesKubeProxy(t *testing.T) {
	p, err := Compile(kubeProxyOverallState(), ModeNFTables)
	if err != nil {
		t.Fatal(err)
	}
	serviceLine := func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 4 && f[0] == "add" && (strings.Contains(f[4], "/") || f[1] == "element" && f[4] != "nodeport-ips")
	}
	var got []string
	for _, l := range strings.Split(p.NFTables[0].String(), "\n") {
		if serviceLine(l) {
			got = append(got, l)
		}
	}
	want := strings.Split(strings.TrimSpace(kubeProxyOverallServices), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("per-service objects differ from kube-proxy's (-kube-proxy +svcplan):\n%s", diff)
	}
}

// TestCompileNFTablesDeterministic is invariant 1 for nftables plans.
func TestCompileNFTablesDeterministic(t *testing.T) {
	cases := append(nftGoldenCases(), goldenCase{name: "bench", st: benchState(300, 7)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := compileNFTText(t, tc.st, tc.opts...)
			r := rand.New(rand.NewPCG(2, uint64(len(tc.name))))
			for i := range 4 {
				st := shuffled(tc.st, r)
				opts := append([]Option{WithParallelism(i + 1)}, tc.opts...)
				if diff := cmp.Diff(want, compileNFTText(t, st, opts...)); diff != "" {
					t.Fatalf("shuffled state, parallelism %d: text mismatch (-want +got):\n%s", i+1, diff)
				}
			}
		})
	}
}

// TestCompileNFTablesDoesNotMutate checks that Compile leaves its input
// as it was.
func TestCompileNFTablesDoesNotMutate(t *testing.T) {
	cases, fresh := nftGoldenCases(), nftGoldenCases()
	for i, tc := range cases {
		if _, err := Compile(tc.st, ModeNFTables, tc.opts...); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fresh[i].st, tc.st, addrCmp...); diff != "" {
			t.Errorf("%s: Compile changed its input (-before +after):\n%s", tc.name, diff)
		}
	}
}

// TestNFTablesSharedAddress checks that two services on the same external
// IP and port give one map element, the first service's.
func TestNFTablesSharedAddress(t *testing.T) {
	a := clusterIP("ns1", "a", "172.30.0.1", ep("10.180.0.1", "p80", 80))
	a.ExternalIPs = addrs("192.168.99.1")
	b := clusterIP("ns1", "b", "172.30.0.2", ep("10.180.0.2", "p80", 80))
	b.ExternalIPs = addrs("192.168.99.1")
	p, err := Compile(baseState(b, a), ModeNFTables)
	if err != nil {
		t.Fatal(err)
	}
	checkNFTPlan(t, p.NFTables[0])
	var got []string
	for _, e := range p.NFTables[0].Set(nftServiceIPsMap).Elements {
		if e.Addr == netip.MustParseAddr("192.168.99.1") {
			got = append(got, e.Action.Chain)
		}
	}
	want := []string{NFTPrefixExternal + NFTServicePortNameBase("ns1", "a", "tcp", "p80")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("service-ips elements for 192.168.99.1 (-want +got):\n%s", diff)
	}
}

// TestNFTablesCompilerRefusesUnsafeNames checks that the compiler itself,
// without Validate in front of it, refuses names that would change the
// meaning of nft input.
func TestNFTablesCompilerRefusesUnsafeNames(t *testing.T) {
	for _, mod := range []func(*proxy.Service){
		func(s *proxy.Service) { s.Name = `svc"1` },
		func(s *proxy.Service) { s.Namespace = "ns;1" },
		func(s *proxy.Service) { s.Ports[0].Name = "p80\nadd"; s.Endpoints[0].Ports[0].Name = s.Ports[0].Name },
	} {
		svc := clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80))
		mod(&svc)
		o := defaultOptions()
		if _, err := compileNFTables(baseState(svc), &o); !errors.Is(err, iptables.ErrUnsafeArgument) {
			t.Errorf("compileNFTables(%q/%q:%q) error = %v, want %v", svc.Namespace, svc.Name, svc.Ports[0].Name, err, iptables.ErrUnsafeArgument)
		}
	}
}
