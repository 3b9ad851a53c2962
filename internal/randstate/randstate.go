// Package randstate generates random, valid proxy states and packets aimed
// at them, for the property tests that hold every mode's tracer to
// proxy.Resolve.
package randstate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/svcplan/svcplan/proxy"
)

// Gen draws states and packets from one random source.
type Gen struct {
	r *rand.Rand
}

// New returns a generator seeded with seed, so that a failure can be
// replayed.
func New(seed uint64) *Gen {
	return &Gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *Gen) chance(p float64) bool { return g.r.Float64() < p }
func (g *Gen) pick(n int) int        { return g.r.IntN(n) }

// Node addresses and networks used by every generated state.
var (
	NodeV4     = netip.MustParseAddr("10.0.0.10")
	NodeV6     = netip.MustParseAddr("fd00::10")
	PodCIDRv4  = netip.MustParsePrefix("10.244.0.0/16")
	PodCIDRv6  = netip.MustParsePrefix("fd00:244::/64")
	AllowedV4  = netip.MustParsePrefix("203.0.113.0/24")
	AllowedV6  = netip.MustParsePrefix("2001:db8:113::/64")
	OutsideV4  = netip.MustParseAddr("198.18.0.1")
	OutsideV6  = netip.MustParseAddr("2001:db8:ffff::1")
	ClientV4   = netip.MustParseAddr("203.0.113.5")
	ClientV6   = netip.MustParseAddr("2001:db8:113::5")
	nodeNames  = []string{"node-a", "node-b", ""}
	zones      = []string{"zone-a", "zone-b"}
	protocols  = []proxy.Protocol{proxy.ProtocolTCP, proxy.ProtocolUDP, proxy.ProtocolSCTP}
	portNames  = []string{"http", "dns", "metrics"}
	trafficPol = []proxy.TrafficPolicy{"", proxy.TrafficPolicyCluster, proxy.TrafficPolicyLocal}
)

// State returns a random valid state for node "node-a": up to six
// services of every type, with endpoints on this node and others in every
// condition, affinity, traffic policies, hints, source ranges and, now and
// then, IPv6.
func (g *Gen) State() *proxy.State {
	st := &proxy.State{Node: proxy.Node{Name: "node-a", IPs: []netip.Addr{NodeV4, NodeV6}}}
	if g.chance(0.5) {
		st.Node.Zone = zones[g.pick(2)]
	}
	if g.chance(0.7) {
		st.Config.ClusterCIDRs = []netip.Prefix{PodCIDRv4, PodCIDRv6}
	}
	st.Config.MasqueradeAll = g.chance(0.2)
	if g.chance(0.2) {
		st.Config.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	}
	if g.chance(0.1) {
		bit := g.pick(32)
		st.Config.MasqueradeBit = &bit
	}
	nodePort := 30000
	n := 1 + g.pick(6)
	for i := range n {
		st.Services = append(st.Services, g.service(i, &nodePort))
	}
	return st
}

func (g *Gen) service(i int, nodePort *int) proxy.Service {
	svc := proxy.Service{Namespace: "ns" + fmt.Sprint(g.pick(2)), Name: fmt.Sprintf("svc%d", i)}
	switch g.pick(3) {
	case 1:
		svc.Type = proxy.ServiceTypeNodePort
	case 2:
		svc.Type = proxy.ServiceTypeLoadBalancer
	}
	dual := g.chance(0.3)
	svc.ClusterIPs = []netip.Addr{v4(10, 96, 0, byte(i+1))}
	if dual {
		svc.ClusterIPs = append(svc.ClusterIPs, v6(0x96, uint16(i+1)))
	}
	nports := 1 + g.pick(2)
	for j := range nports {
		p := proxy.ServicePort{Name: portNames[j], Protocol: protocols[g.pick(3)], Port: 80 + j*1000 + g.pick(2)}
		if nports == 1 && g.chance(0.3) {
			p.Name = ""
		}
		if svc.Type != "" {
			p.NodePort = *nodePort
			*nodePort++
		}
		svc.Ports = append(svc.Ports, p)
	}
	if g.chance(0.25) {
		svc.ExternalIPs = []netip.Addr{v4(198, 51, 100, byte(i+1))}
		if dual {
			svc.ExternalIPs = append(svc.ExternalIPs, netip.MustParseAddr(fmt.Sprintf("2001:db8:100::%d", i+1)))
		}
	}
	if svc.Type == proxy.ServiceTypeLoadBalancer {
		svc.LoadBalancerIPs = []netip.Addr{v4(192, 0, 2, byte(i+1))}
		if dual {
			svc.LoadBalancerIPs = append(svc.LoadBalancerIPs, netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%d", i+1)))
		}
		switch g.pick(4) {
		case 1:
			svc.LoadBalancerSourceRanges = []netip.Prefix{AllowedV4}
		case 2:
			svc.LoadBalancerSourceRanges = []netip.Prefix{AllowedV4, AllowedV6}
		case 3:
			svc.LoadBalancerSourceRanges = []netip.Prefix{AllowedV4, netip.MustParsePrefix("10.0.0.0/24")}
		}
	}
	if g.chance(0.25) {
		svc.SessionAffinity = proxy.SessionAffinityClientIP
		if g.chance(0.5) {
			svc.AffinityTimeoutSeconds = 1 + g.pick(proxy.MaxAffinityTimeoutSeconds)
		}
	}
	if svc.Type != "" || len(svc.ExternalIPs) > 0 {
		svc.ExternalTrafficPolicy = trafficPol[g.pick(3)]
	}
	svc.InternalTrafficPolicy = trafficPol[g.pick(3)]
	if svc.Type == proxy.ServiceTypeLoadBalancer && svc.ExternalTrafficPolicy == proxy.TrafficPolicyLocal && g.chance(0.5) {
		svc.HealthCheckNodePort = *nodePort
		*nodePort++
	}
	svc.Endpoints = g.endpoints(i, &svc, dual)
	return svc
}

func (g *Gen) endpoints(i int, svc *proxy.Service, dual bool) []proxy.Endpoint {
	var eps []proxy.Endpoint
	n := g.pick(5)
	allHinted := g.chance(0.3)
	for k := range n {
		node := nodeNames[g.pick(3)]
		third := byte(2)
		if node == "node-a" {
			third = 1
		}
		addr := v4(10, 244, third, byte(10*i+k+2))
		if dual && g.chance(0.5) {
			addr = netip.MustParseAddr(fmt.Sprintf("fd00:244::%x:%x", third, 10*i+k+2))
		}
		ep := proxy.Endpoint{Addr: addr, NodeName: node}
		switch g.pick(5) {
		case 0:
			ep.Ready = false
		case 1:
			ep.Serving, ep.Terminating = true, true
		case 2:
			ep.Terminating = true
		default:
			ep.Ready = true
		}
		if allHinted {
			ep.ZoneHints = []string{zones[g.pick(2)]}
		}
		for _, p := range svc.Ports {
			if g.chance(0.9) {
				ep.Ports = append(ep.Ports, proxy.EndpointPort{Name: p.Name, Port: 8000 + g.pick(3)})
			}
		}
		eps = append(eps, ep)
	}
	return eps
}

// Packet returns a random packet aimed at the state: its cluster IPs,
// external and load balancer IPs, node addresses and NodePorts, from pods,
// the node, endpoints, allowed and denied sources, of one family.
func (g *Gen) Packet(st *proxy.State) proxy.Packet {
	ipv6 := g.chance(0.2)
	var dsts []netip.Addr
	var ports []int
	for _, s := range st.Services {
		dsts = append(dsts, s.ClusterIPs...)
		dsts = append(dsts, s.ExternalIPs...)
		dsts = append(dsts, s.LoadBalancerIPs...)
		for _, p := range s.Ports {
			ports = append(ports, p.Port)
			if p.NodePort != 0 {
				ports = append(ports, p.NodePort)
			}
		}
		if s.HealthCheckNodePort != 0 {
			ports = append(ports, s.HealthCheckNodePort)
		}
	}
	dsts = append(dsts, NodeV4, NodeV6, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), v4(10, 96, 9, 9))
	ports = append(ports, 22, 30999)
	dst := g.familyPick(dsts, ipv6)
	pkt := proxy.Packet{Dst: netip.AddrPortFrom(dst, uint16(ports[g.pick(len(ports))])), Protocol: protocols[g.pick(3)]}
	pkt.FromNode = g.chance(0.25)
	if pkt.FromNode {
		srcs := []netip.Addr{NodeV4, NodeV6}
		if dst.IsLoopback() {
			srcs = []netip.Addr{dst}
		}
		for _, s := range st.Services {
			srcs = append(srcs, s.LoadBalancerIPs...)
		}
		pkt.Src = g.familyPick(srcs, ipv6)
		return pkt
	}
	srcs := []netip.Addr{v4(10, 244, 1, 200), netip.MustParseAddr("fd00:244::1:c8"), OutsideV4, OutsideV6, ClientV4, ClientV6, v4(10, 0, 0, 2), netip.MustParseAddr("fd00::2")}
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			srcs = append(srcs, e.Addr)
		}
	}
	pkt.Src = g.familyPick(srcs, ipv6)
	return pkt
}

func (g *Gen) familyPick(as []netip.Addr, ipv6 bool) netip.Addr {
	var f []netip.Addr
	for _, a := range as {
		if a.Is6() == ipv6 {
			f = append(f, a)
		}
	}
	return f[g.pick(len(f))]
}

func v4(a, b, c, d byte) netip.Addr { return netip.AddrFrom4([4]byte{a, b, c, d}) }

func v6(group byte, last uint16) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 0, group, 14: byte(last >> 8), 15: byte(last)})
}
