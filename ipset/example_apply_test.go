package ipset_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/svcplan/svcplan/ipset"
)

// A Fake applies plans as the kernel applier does and counts the writes:
// a second plan that moves one member costs two.
func ExampleFake() {
	ctx := context.Background()
	f := ipset.NewFake()
	p := &ipset.Plan{Sets: []ipset.Set{{
		Name: "KUBE-CLUSTER-IP", Type: ipset.TypeHashIPPort, Family: ipset.IPv4,
		Entries: []ipset.Entry{
			{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.TCP, Port: 443},
			{IP: netip.MustParseAddr("10.96.0.10"), Protocol: ipset.UDP, Port: 53},
		},
	}}}
	if err := f.Apply(ctx, p); err != nil {
		fmt.Println(err)
		return
	}
	p.Sets[0].Entries[1].Port = 5353
	if err := f.Apply(ctx, p); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(f)
	fmt.Println("writes of the second apply:", f.Stats().LastOperations)
	// Output:
	// create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
	// add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
	// add KUBE-CLUSTER-IP 10.96.0.10,udp:5353
	// writes of the second apply: 2
}
