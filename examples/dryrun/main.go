// Command dryrun builds a small service model in Go, compiles it into
// kube-proxy's iptables rules, prints them, and traces one packet through
// them: everything svcplan does without touching a kernel.
package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func main() {
	if err := run(os.Stdout, exampleState()); err != nil {
		fmt.Fprintln(os.Stderr, "dryrun:", err)
		os.Exit(1)
	}
}

// exampleState is one NodePort service with an endpoint on this node and
// one on another.
func exampleState() *proxy.State {
	return &proxy.State{
		Node:   proxy.Node{Name: "node-a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}},
		Config: proxy.Config{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
		Services: []proxy.Service{{
			Namespace:  "shop",
			Name:       "cart",
			Type:       proxy.ServiceTypeNodePort,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.7.7")},
			Ports:      []proxy.ServicePort{{Name: "http", Port: 80, NodePort: 30080}},
			Endpoints: []proxy.Endpoint{
				{Addr: netip.MustParseAddr("10.244.1.5"), NodeName: "node-a", Ready: true, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}},
				{Addr: netip.MustParseAddr("10.244.2.5"), NodeName: "node-b", Ready: true, Ports: []proxy.EndpointPort{{Name: "http", Port: 8080}}},
			},
		}},
	}
}

func run(w io.Writer, st *proxy.State) error {
	plan, err := translate.Compile(st, translate.ModeIPTables)
	if err != nil {
		return err
	}
	v4 := plan.IPTables[0]
	if _, err := v4.WriteTo(w); err != nil {
		return err
	}

	tr, err := iptables.NewTracer(v4, iptables.WithLocalAddrs(st.Node.IPs))
	if err != nil {
		return err
	}
	pkt := iptables.Packet{
		Src:      netip.MustParseAddr("192.168.1.50"),
		Dst:      netip.MustParseAddrPort("10.0.0.10:30080"),
		Protocol: "tcp",
		Hook:     iptables.HookPrerouting,
	}
	res, err := tr.Trace(pkt)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "\n# where %s -> %s goes:\n%s", pkt.Src, pkt.Dst, res)
	return err
}
