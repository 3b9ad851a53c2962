package ipvs_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/ipvs"
)

// A Fake applies plans as the kernel applier does. A TCP real server
// removed while a client is still connected drains: it keeps weight 0
// until its connections are gone.
func ExampleFake() {
	ctx := context.Background()
	f := ipvs.NewFake()
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	old, cur := netip.MustParseAddrPort("10.244.1.5:8080"), netip.MustParseAddrPort("10.244.2.7:8080")
	p := &ipvs.Plan{
		Addresses: []netip.Addr{vip.Addr()},
		VirtualServers: []ipvs.VirtualServer{{Protocol: ipvs.TCP, Addr: vip,
			RealServers: []ipvs.RealServer{{Addr: old, Weight: 1}}}},
	}
	if err := f.Apply(ctx, p); err != nil {
		fmt.Println(err)
		return
	}
	f.SetConnections(ipvs.TCP, vip, old, 1)
	p.VirtualServers[0].RealServers = []ipvs.RealServer{{Addr: cur, Weight: 1}}
	if err := f.Apply(ctx, p); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(f)
	st := f.Stats()
	fmt.Println("writes:", st.LastOperations, "draining:", st.Draining)
	// Output:
	// -A -t 10.96.0.10:80 -s rr
	// -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 0
	// -a -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 1
	// link add kube-ipvs0 type dummy
	// addr add 10.96.0.10/32 dev kube-ipvs0
	// writes: 2 draining: 1
}
