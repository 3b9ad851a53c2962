package ipvs

import (
	"cmp"
	"net/netip"
	"slices"
)

// Compare orders virtual servers by protocol name, then address and port
// ([netip.AddrPort.Compare]: IPv4 before IPv6); it returns -1, 0 or +1.
// Plans keep their virtual servers in this order.
func (v *VirtualServer) Compare(o *VirtualServer) int {
	if c := cmp.Compare(v.Protocol, o.Protocol); c != 0 {
		return c
	}
	return v.Addr.Compare(o.Addr)
}

// Sort sorts p's virtual servers by [VirtualServer.Compare], each one's
// real servers by address and port, and the addresses.
func (p *Plan) Sort() {
	slices.SortFunc(p.VirtualServers, func(a, b VirtualServer) int { return a.Compare(&b) })
	for i := range p.VirtualServers {
		rs := p.VirtualServers[i].RealServers
		slices.SortFunc(rs, func(a, b RealServer) int { return a.Addr.Compare(b.Addr) })
	}
	slices.SortFunc(p.Addresses, func(a, b netip.Addr) int { return a.Compare(b) })
}

// VirtualServer returns the virtual server of protocol proto at addr, or
// nil. The virtual servers must be sorted (see [Plan.Sort]).
func (p *Plan) VirtualServer(proto Protocol, addr netip.AddrPort) *VirtualServer {
	key := VirtualServer{Protocol: proto, Addr: addr}
	i, ok := slices.BinarySearchFunc(p.VirtualServers, &key, func(v VirtualServer, k *VirtualServer) int { return v.Compare(k) })
	if !ok {
		return nil
	}
	return &p.VirtualServers[i]
}

// SchedulerOrDefault returns v.Scheduler, defaulted to RoundRobin.
func (v *VirtualServer) SchedulerOrDefault() Scheduler {
	if v.Scheduler == "" {
		return RoundRobin
	}
	return v.Scheduler
}

// InterfaceOrDefault returns p.Interface, defaulted to DefaultInterface.
func (p *Plan) InterfaceOrDefault() string {
	if p.Interface == "" {
		return DefaultInterface
	}
	return p.Interface
}

// Equal reports whether v and o are the same virtual server with the same
// real servers; an empty Scheduler equals RoundRobin.
func (v *VirtualServer) Equal(o *VirtualServer) bool {
	return v.Protocol == o.Protocol && v.Addr == o.Addr && v.SchedulerOrDefault() == o.SchedulerOrDefault() &&
		v.Timeout == o.Timeout && slices.Equal(v.RealServers, o.RealServers)
}
