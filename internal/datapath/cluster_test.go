package datapath

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func testCluster(n, eps int) Cluster {
	return Cluster{
		Services:    n,
		Endpoints:   eps,
		Node:        proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		Backend:     netip.MustParseAddrPort("10.244.1.2:8080"),
	}
}

func TestClusterState(t *testing.T) {
	for _, c := range []Cluster{testCluster(1, 0), testCluster(10, 3), testCluster(1000, 1)} {
		st, err := c.State()
		if err != nil {
			t.Fatalf("Cluster{Services: %d}.State() = %v", c.Services, err)
		}
		if err := st.Validate(); err != nil {
			t.Fatalf("Cluster{Services: %d}.State() is invalid: %v", c.Services, err)
		}
		last := st.Services[len(st.Services)-1]
		if got, want := last.ClusterIPs[0], c.Target().Addr(); got != want {
			t.Errorf("last service's cluster IP = %s, want Target %s", got, want)
		}
		if len(last.Endpoints) != 1 || last.Endpoints[0].Addr != c.Backend.Addr() || last.Endpoints[0].NodeName != c.Node.Name {
			t.Errorf("last service's endpoints = %+v, want only the local backend %s", last.Endpoints, c.Backend)
		}
		seen := map[netip.Addr]bool{c.Backend.Addr(): true}
		for _, svc := range st.Services[:len(st.Services)-1] {
			if got, want := len(svc.Endpoints), max(c.Endpoints, 1); got != want {
				t.Fatalf("service %s has %d endpoints, want %d", svc.Name, got, want)
			}
			for _, ep := range svc.Endpoints {
				if seen[ep.Addr] {
					t.Fatalf("endpoint address %s used twice", ep.Addr)
				}
				seen[ep.Addr] = true
			}
		}
	}
}

func TestClusterStateErrors(t *testing.T) {
	tests := []struct {
		name    string
		c       Cluster
		wantErr string
	}{
		{"no services", testCluster(0, 1), "services: 0 out of range"},
		{"too many services", testCluster(MaxServices+1, 1), "services: 65535 out of range"},
		{"negative endpoints", testCluster(5, -1), "endpoints: -1 per service"},
		{"too many endpoints", testCluster(MaxServices, 100), "endpoints: 100 per service"},
		{"no backend", Cluster{Services: 3}, "backend: invalid AddrPort"},
		{"IPv6 backend", Cluster{Services: 3, Backend: netip.MustParseAddrPort("[fd00::1]:80")}, "is not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.State()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("State() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTargetIsLastInIPTables checks what the benchmark relies on: in
// iptables mode the measured service's dispatch rule is the last one of
// KUBE-SERVICES but the NodePort rule, so its first packet walks them all.
func TestTargetIsLastInIPTables(t *testing.T) {
	c := testCluster(50, 2)
	st, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	p, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		t.Fatalf("Compile = %v", err)
	}
	chain := p.IPTables[0].Chain(iptables.TableNAT, "KUBE-SERVICES")
	if chain == nil {
		t.Fatal("nat table has no KUBE-SERVICES chain")
	}
	rules := chain.Rules()
	if got, want := len(rules), c.Services+1; got != want {
		t.Fatalf("KUBE-SERVICES has %d rules, want %d:\n%s", got, want, chain.Body())
	}
	dst := "-d " + c.Target().Addr().String() + " "
	if !strings.Contains(rules[len(rules)-2], dst) {
		t.Errorf("second-to-last KUBE-SERVICES rule = %q, want the measured service's (%s)", rules[len(rules)-2], dst)
	}
	for _, r := range rules[:len(rules)-2] {
		if strings.Contains(r, dst) {
			t.Errorf("rule %q for the measured service comes before the last", r)
		}
	}
}
