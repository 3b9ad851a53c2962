package proxier_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// dualStack returns state(epLocal) with an IPv6 cluster IP, node address
// and endpoint added to ns/web.
func dualStack() *proxy.State {
	st := state(epLocal)
	st.Node.IPs = append(st.Node.IPs, netip.MustParseAddr("fd00::10"))
	st.Config.ClusterCIDRs = append(st.Config.ClusterCIDRs, netip.MustParsePrefix("fd00:244::/48"))
	web := &st.Services[0]
	web.ClusterIPs = append(web.ClusterIPs, netip.MustParseAddr("fd00:96::10"))
	web.Endpoints = append(web.Endpoints, proxy.Endpoint{Addr: netip.MustParseAddr("fd00:244:1::2"), Ready: true,
		Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}})
	return st
}

// TestSyncNFTablesFamilyGone: when the IPv6 family leaves the state, its
// kube-proxy table is deleted and the IPv4 one stays.
func TestSyncNFTablesFamilyGone(t *testing.T) {
	ctx := context.Background()
	fake := nftables.NewFake()
	p, err := proxier.New(translate.ModeNFTables, proxier.WithNFTablesApplier(fake), proxier.WithoutConntrackCleanup(),
		proxier.WithIPTablesApplier(iptables.IPv4, iptables.NewFake(iptables.IPv4)),
		proxier.WithIPTablesApplier(iptables.IPv6, iptables.NewFake(iptables.IPv6)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, dualStack()); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	if !strings.Contains(dump, "table ip kube-proxy") || !strings.Contains(dump, "table ip6 kube-proxy") {
		t.Fatalf("a dual-stack sync wrote:\n%s", dump)
	}
	for _, tc := range []struct {
		name   string
		st     *proxy.State
		want   []string
		absent []string
	}{
		{"IPv6 gone", state(epLocal), []string{"table ip kube-proxy", "10.244.1.2"}, []string{"table ip6 kube-proxy"}},
		{"IPv4 only again", state(epRemote), []string{"table ip kube-proxy", "10.244.2.2"}, []string{"table ip6 kube-proxy", "10.244.1.2"}},
		{"IPv6 back", dualStack(), []string{"table ip kube-proxy", "table ip6 kube-proxy", "fd00:244:1::2"}, nil},
	} {
		if err := p.Sync(ctx, tc.st); err != nil {
			t.Fatalf("%s: Sync = %v", tc.name, err)
		}
		dump := fake.Dump()
		for _, w := range tc.want {
			if !strings.Contains(dump, w) {
				t.Errorf("%s: the fake lacks %q:\n%s", tc.name, w, dump)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(dump, a) {
				t.Errorf("%s: the fake still holds %q:\n%s", tc.name, a, dump)
			}
		}
	}
}
