package proxier_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// A proxier over the iptables Fake: Sync compiles the state and applies
// it; a second Sync of the same services writes nothing; Cleanup removes
// what the proxier owns and leaves the rest.
func Example() {
	ctx := context.Background()
	fake := iptables.NewFake(iptables.IPv4)
	fake.AddForeign(iptables.TableNAT, "PREROUTING", "-j DOCKER")
	p, err := proxier.New(translate.ModeIPTables,
		proxier.WithIPTablesApplier(iptables.IPv4, fake),
		proxier.WithIPTablesApplier(iptables.IPv6, iptables.NewFake(iptables.IPv6)),
		// Cleanup removes every mode's objects: fakes for the other
		// modes' appliers too, so that it makes no kernel applier.
		proxier.WithNFTablesApplier(nftables.NewFake()),
		proxier.WithIPSetApplier(ipset.NewFake()),
		proxier.WithIPVSApplier(ipvs.NewFake()),
		proxier.WithoutConntrackCleanup())
	if err != nil {
		fmt.Println(err)
		return
	}
	st := func() *proxy.State {
		return &proxy.State{
			Node: proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
			Services: []proxy.Service{{
				Namespace: "shop", Name: "cart",
				ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.7.7")},
				Ports:      []proxy.ServicePort{{Name: "http", Port: 80}},
				Endpoints: []proxy.Endpoint{{Addr: netip.MustParseAddr("10.244.1.5"), Ready: true,
					Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}}},
			}},
		}
	}
	if err := p.Sync(ctx, st()); err != nil {
		fmt.Println(err)
		return
	}
	restores := fake.Restores()
	if err := p.Sync(ctx, st()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("restores by the second sync:", fake.Restores()-restores)
	for _, line := range strings.Split(fake.Dump(), "\n") {
		if strings.Contains(line, "-j DNAT") {
			fmt.Println(line)
		}
	}
	if err := p.Cleanup(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("owned chains left:", strings.Contains(fake.Dump(), "KUBE-"))
	fmt.Println("foreign rule kept:", strings.Contains(fake.Dump(), "-A PREROUTING -j DOCKER"))
	// Output:
	// restores by the second sync: 0
	// -A KUBE-SEP-27VOFYQ7SVOL37XI -m comment --comment shop/cart:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
	// owned chains left: false
	// foreign rule kept: true
}
