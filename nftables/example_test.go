package nftables_test

import (
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/nftables"
)

// A plan of one NAT chain that spreads a service address over two
// endpoints, written as nft input and traced.
func Example() {
	prerouting, _ := nftables.NewChain("nat-prerouting", "ip daddr 172.30.0.1 tcp dport 80 jump svc")
	prerouting.Base = &nftables.BaseChain{Type: nftables.ChainTypeNAT, Hook: nftables.HookPrerouting, Priority: nftables.PriorityDstNAT}
	svc, _ := nftables.NewChain("svc", "numgen random mod 2 vmap { 0 : goto ep1 , 1 : goto ep2 }")
	ep1, _ := nftables.NewChain("ep1", "meta l4proto tcp dnat to 10.0.1.1:8080")
	ep2, _ := nftables.NewChain("ep2", "meta l4proto tcp dnat to 10.0.2.2:8080")
	p := &nftables.Plan{Table: nftables.Table{Name: "demo"}, Chains: []nftables.Chain{prerouting, svc, ep1, ep2}}
	if err := p.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(p)

	tr, _ := nftables.NewTracer(p)
	res, _ := tr.Trace(nftables.Packet{
		Src:      netip.MustParseAddr("10.0.9.9"),
		Dst:      netip.MustParseAddrPort("172.30.0.1:80"),
		Protocol: "tcp",
		Hook:     nftables.HookPrerouting,
	})
	fmt.Print(res)
	// Output:
	// add table ip demo
	// delete table ip demo
	// add table ip demo
	//
	// add chain ip demo nat-prerouting { type nat hook prerouting priority -100 ; }
	// add chain ip demo svc
	// add chain ip demo ep1
	// add chain ip demo ep2
	//
	// add rule ip demo nat-prerouting ip daddr 172.30.0.1 tcp dport 80 jump svc
	//
	// add rule ip demo svc numgen random mod 2 vmap { 0 : goto ep1 , 1 : goto ep2 }
	//
	// add rule ip demo ep1 meta l4proto tcp dnat to 10.0.1.1:8080
	//
	// add rule ip demo ep2 meta l4proto tcp dnat to 10.0.2.2:8080
	//  50.00% accept 10.0.1.1:8080 dnat via nat-prerouting > svc > ep1
	//  50.00% accept 10.0.2.2:8080 dnat via nat-prerouting > svc > ep2
}

// ParseRule gives the typed form of a rule, which an applier turns into
// kernel expressions.
func ExampleParseRule() {
	r, _ := nftables.ParseRule("ip daddr . meta l4proto . th dport vmap @service-ips")
	for _, e := range r.Exprs {
		fmt.Printf("%T %+v\n", e, e)
	}
	// Output:
	// nftables.VMap {Key:[daddr l4proto dport] Map:service-ips}
}
