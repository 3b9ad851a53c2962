package scenario_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/svcplan/svcplan/internal/netnstest"
	"github.com/svcplan/svcplan/internal/scenario"
	"github.com/svcplan/svcplan/proxy"
)

// Ports of the dual-stack UDP service of TestUserspaceUDPFromPods.
const (
	udpPodsPort     = 53
	udpPodsBackend  = 5353
	udpPodsNodePort = 30153
)

// TestUserspaceUDPFromPods checks that in userspace mode a pod gets
// answers to its datagrams to a dual-stack UDP service, on either cluster
// IP and on the NodePort of either family. A pod's datagram is redirected
// to the primary address of the pod link it arrives on, which over IPv6
// is the node's link-local fe80::1; the proxy's answer must leave from
// that address, not from one the kernel picks for the pod's address (the
// node's global one), or conntrack does not see it as the reply of the
// pod's flow and the pod's connected socket drops it. Two pods on links
// of their own, each with its fe80::1, check that each answer leaves
// through the link its datagram came in on. The client and the node,
// whose datagrams are redirected to global and loopback addresses, check
// that those paths still work.
func TestUserspaceUDPFromPods(t *testing.T) {
	requireIPTables(t)
	e := scenario.NewEnv(t, newUserspaceMode())
	if !slices.Contains(e.Topo.Families(), netnstest.IPv6) {
		t.Skip("the topology has no IPv6")
	}
	v4, v6 := netnstest.IPv4, netnstest.IPv6
	a := e.AddBackend(t, "a", netnstest.Local, "udp", udpPodsBackend)
	b := e.AddBackend(t, "b", netnstest.Remote, "udp", udpPodsBackend)
	pods := []netnstest.Pod{e.AddPod(t, "client", netnstest.Local), e.AddPod(t, "client2", netnstest.Local)}
	cip4, cip6 := netip.MustParseAddr("10.96.0.200"), netip.MustParseAddr("fd00:96::200")
	st := e.BaseState()
	st.Services = []proxy.Service{{
		Namespace:  scenario.Namespace,
		Name:       "dns",
		Type:       proxy.ServiceTypeNodePort,
		ClusterIPs: []netip.Addr{cip4, cip6},
		Ports: []proxy.ServicePort{{Protocol: proxy.ProtocolUDP, Port: udpPodsPort,
			TargetPort: udpPodsBackend, NodePort: udpPodsNodePort}},
		Endpoints: append(scenario.Endpoints(v4, udpPodsBackend, a, b), scenario.Endpoints(v6, udpPodsBackend, a, b)...),
	}}
	e.Apply(t, st)

	type path struct {
		name string
		src  scenario.Source
		dst  netip.AddrPort
	}
	var tests []path
	for i, p := range pods {
		for _, f := range []netnstest.Family{v4, v6} {
			src := scenario.FromPod(p, f)
			cip := cip4
			if f == v6 {
				cip = cip6
			}
			tests = append(tests,
				path{name: fmt.Sprintf("%s cluster IP from pod %d", f, i+1), src: src, dst: netip.AddrPortFrom(cip, udpPodsPort)},
				path{name: fmt.Sprintf("%s NodePort from pod %d", f, i+1), src: src, dst: netip.AddrPortFrom(e.Topo.NodeIP(f), udpPodsNodePort)},
			)
		}
	}
	tests = append(tests,
		path{name: "IPv6 cluster IP from the client", src: e.Client(v6), dst: netip.AddrPortFrom(cip6, udpPodsPort)},
		path{name: "IPv6 NodePort from the client", src: e.Client(v6), dst: netip.AddrPortFrom(e.Topo.NodeIP(v6), udpPodsNodePort)},
		path{name: "IPv6 cluster IP from the node", src: e.Node(v6), dst: netip.AddrPortFrom(cip6, udpPodsPort)},
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backends := scenario.Backends(netnstest.FamilyOf(tc.dst.Addr()), udpPodsBackend, a, b)
			// Each datagram comes from a port of its own: a session each.
			e.ExpectN(t, 3, tc.src, "udp", tc.dst, scenario.Reach(true, backends...))
		})
	}
}
