package userspace_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/svcplan/svcplan/userspace"
)

func ExamplePlan_String() {
	plan := userspace.Plan{Listeners: []userspace.Listener{
		{
			Name:     "default/web:http",
			Protocol: userspace.ProtocolTCP,
			Addr:     netip.MustParseAddrPort("0.0.0.0:20000"),
			Backends: []netip.AddrPort{
				netip.MustParseAddrPort("10.244.1.2:8080"),
				netip.MustParseAddrPort("10.244.2.2:8080"),
			},
			AffinityTimeout: 3 * time.Hour,
		},
		{
			Name:     "kube-system/dns:dns",
			Protocol: userspace.ProtocolUDP,
			Addr:     netip.MustParseAddrPort("0.0.0.0:20001"),
			Backends: []netip.AddrPort{netip.MustParseAddrPort("10.244.1.3:53")},
		},
	}}
	fmt.Print(plan.String())
	fmt.Println(plan.Ports())
	// Output:
	// LISTENER             PROTOCOL  ADDRESS        AFFINITY  UDP IDLE  BACKENDS
	// default/web:http     tcp       0.0.0.0:20000  3h0m0s    -         10.244.1.2:8080 10.244.2.2:8080
	// kube-system/dns:dns  udp       0.0.0.0:20001  -         250ms     10.244.1.3:53
	// map[tcp/default/web:http:20000 udp/kube-system/dns:dns:20001]
}

// ExampleProxy runs the proxy on loopback in front of an echo server.
func ExampleProxy() {
	backend, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	ctx := context.Background()
	p := userspace.NewProxy()
	defer p.Close(ctx)
	err = p.Apply(ctx, &userspace.Plan{Listeners: []userspace.Listener{{
		Name:     "default/echo",
		Addr:     netip.MustParseAddrPort("127.0.0.1:0"), // let the kernel choose
		Backends: []netip.AddrPort{netip.MustParseAddrPort(backend.Addr().String())},
	}}})
	if err != nil {
		panic(err)
	}
	addr := p.Stats()[0].Addr

	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		panic(err)
	}
	_, _ = io.WriteString(c, "hello through the proxy")
	_ = c.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	c.Close()
	fmt.Printf("%s\n", reply)

	for p.Stats()[0].Active > 0 {
		time.Sleep(time.Millisecond)
	}
	s := p.Stats()[0]
	fmt.Printf("%s: accepted %d, bytes in %d, out %d\n", s.Name, s.Accepted, s.BytesIn, s.BytesOut)
	// Output:
	// hello through the proxy
	// default/echo: accepted 1, bytes in 23, out 23
}
