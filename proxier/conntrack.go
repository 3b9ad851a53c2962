package proxier

import (
	"context"
	"net/netip"
	"slices"

	"github.com/svcplan/svcplan/proxy"
)

// Conntrack deletes stale UDP conntrack entries. The default deletes them
// through netlink in the proxier's namespace; [WithConntrack] gives
// another, for tests.
type Conntrack interface {
	// DeleteStale deletes the entries of one family (IPv6 when ipv6 is
	// set) that s matches and returns how many it deleted.
	DeleteStale(ctx context.Context, ipv6 bool, s *StaleFlows) (int, error)
}

// Flow is a conntrack entry as the cleanup looks at it.
type Flow struct {
	// Protocol is the flow's transport protocol.
	Protocol proxy.Protocol
	// OrigDst is the destination of the original direction: the address
	// and port the client sent to.
	OrigDst netip.AddrPort
	// ReplySrc is the source of the reply direction: after DNAT, the
	// endpoint that answers.
	ReplySrc netip.AddrPort
}

// StaleRule matches UDP flows to one service destination whose reply
// source is not one of the endpoints to keep.
type StaleRule struct {
	// Dst is the original destination: a service address and port, or,
	// for a NodePort, an invalid address and the node port, which matches
	// every destination address that is not a service address.
	Dst netip.AddrPort
	// Keep are the endpoints whose flows stay: the serving endpoints of
	// the service port, sorted; nil when the service port is gone or has
	// none, so that every flow to Dst goes.
	Keep []netip.AddrPort
}

// StaleFlows is what the UDP conntrack cleanup deletes after a sync, as
// kube-proxy's conntrack reconciler does: flows to a UDP service address
// or NodePort whose reply source is not a serving endpoint of the service
// port. That covers flows to an endpoint that was removed, flows created
// while the service port had no endpoint (their replies came from the
// service address itself, not DNATed), and flows to a service port that
// was deleted. The zero StaleFlows matches nothing.
type StaleFlows struct {
	// Rules are the rules, in a deterministic order.
	Rules []StaleRule
	// exact indexes Rules with an address by destination; nodePorts those
	// without one by port; serviceAddrs are the addresses of the exact
	// rules.
	exact        map[netip.AddrPort]int
	nodePorts    map[uint16]int
	serviceAddrs map[netip.Addr]bool
}

// Empty reports whether s matches no flow.
func (s *StaleFlows) Empty() bool { return s == nil || len(s.Rules) == 0 }

// Match reports whether f is stale.
func (s *StaleFlows) Match(f Flow) bool {
	if s == nil || f.Protocol != proxy.ProtocolUDP {
		return false
	}
	if s.exact == nil {
		s.index()
	}
	dst := netip.AddrPortFrom(f.OrigDst.Addr().Unmap(), f.OrigDst.Port())
	src := netip.AddrPortFrom(f.ReplySrc.Addr().Unmap(), f.ReplySrc.Port())
	i, ok := s.exact[dst]
	if !ok {
		if s.serviceAddrs[dst.Addr()] {
			return false
		}
		if i, ok = s.nodePorts[dst.Port()]; !ok {
			return false
		}
	}
	_, keep := slices.BinarySearchFunc(s.Rules[i].Keep, src, netip.AddrPort.Compare)
	return !keep
}

func (s *StaleFlows) index() {
	s.exact, s.nodePorts, s.serviceAddrs = map[netip.AddrPort]int{}, map[uint16]int{}, map[netip.Addr]bool{}
	for i, r := range s.Rules {
		if r.Dst.Addr().IsValid() {
			s.exact[r.Dst] = i
			s.serviceAddrs[r.Dst.Addr()] = true
		} else {
			s.nodePorts[r.Dst.Port()] = i
		}
	}
}

// udpPort is what the cleanup knows of one UDP service port in one
// family.
type udpPort struct {
	dsts     []netip.AddrPort
	nodePort uint16
	keep     []netip.AddrPort
}

// udpPorts returns the UDP service ports of st in one family, keyed by
// "ns/name:port".
func udpPorts(st *proxy.State, ipv6 bool) map[string]*udpPort {
	out := map[string]*udpPort{}
	if st == nil {
		return out
	}
	fam := func(a netip.Addr) bool { return a.Unmap().Is6() == ipv6 }
	for i := range st.Services {
		svc := &st.Services[i]
		if !slices.ContainsFunc(svc.ClusterIPs, fam) {
			continue
		}
		for j := range svc.Ports {
			port := &svc.Ports[j]
			if port.ProtocolOrDefault() != proxy.ProtocolUDP {
				continue
			}
			u := &udpPort{nodePort: uint16(port.NodePort)}
			for _, list := range [][]netip.Addr{svc.ClusterIPs, svc.ExternalIPs, svc.LoadBalancerIPs} {
				for _, a := range list {
					if fam(a) {
						u.dsts = append(u.dsts, netip.AddrPortFrom(a.Unmap(), uint16(port.Port)))
					}
				}
			}
			u.keep = servingEndpoints(st, svc, port, ipv6)
			out[proxy.ServicePortName(svc, port)] = u
		}
	}
	return out
}

// servingEndpoints returns the endpoints of port that may answer its
// flows, sorted: those the rules send to, and every other serving one
// (a terminating endpoint keeps its flows while it serves).
func servingEndpoints(st *proxy.State, svc *proxy.Service, port *proxy.ServicePort, ipv6 bool) []netip.AddrPort {
	var keep []netip.AddrPort
	for _, t := range proxy.SelectEndpoints(st, svc, port, ipv6).All {
		keep = append(keep, netip.AddrPortFrom(t.AddrPort.Addr().Unmap(), t.AddrPort.Port()))
	}
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		if !ep.IsServing() || ep.Addr.Unmap().Is6() != ipv6 {
			continue
		}
		if n, ok := ep.PortNumber(port.Name); ok {
			keep = append(keep, netip.AddrPortFrom(ep.Addr.Unmap(), uint16(n)))
		}
	}
	slices.SortFunc(keep, netip.AddrPort.Compare)
	return slices.Compact(keep)
}

// staleFlows returns what to delete in one family once cur is applied,
// having applied old before (nil before the first sync): flows to the
// UDP service ports of cur that no serving endpoint answers, and every
// flow to a UDP service port of old that cur lacks.
func staleFlows(old, cur *proxy.State, ipv6 bool) *StaleFlows {
	before, after := udpPorts(old, ipv6), udpPorts(cur, ipv6)
	s := &StaleFlows{}
	add := func(u *udpPort, keep []netip.AddrPort) {
		for _, d := range u.dsts {
			s.Rules = append(s.Rules, StaleRule{Dst: d, Keep: keep})
		}
		if u.nodePort != 0 {
			s.Rules = append(s.Rules, StaleRule{Dst: netip.AddrPortFrom(netip.Addr{}, u.nodePort), Keep: keep})
		}
	}
	for _, name := range sortedKeys(after) {
		add(after[name], after[name].keep)
	}
	taken := map[netip.AddrPort]bool{}
	for _, r := range s.Rules {
		taken[r.Dst] = true
	}
	for _, name := range sortedKeys(before) {
		if after[name] != nil {
			continue
		}
		o := &udpPort{nodePort: before[name].nodePort}
		for _, d := range before[name].dsts {
			if !taken[d] {
				o.dsts = append(o.dsts, d)
			}
		}
		if taken[netip.AddrPortFrom(netip.Addr{}, o.nodePort)] {
			o.nodePort = 0
		}
		add(o, nil)
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
