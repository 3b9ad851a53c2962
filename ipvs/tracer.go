package ipvs

import (
	"net/netip"
	"slices"
)

// Choice is one real server a new connection may reach.
type Choice struct {
	// RealServer is the real server's address and port.
	RealServer netip.AddrPort
	// Probability is the share of new connections (from distinct clients,
	// for a persistent service) that reach it.
	Probability float64
}

// Lookup is where IPVS sends a new connection to one virtual server.
type Lookup struct {
	// Server is the virtual server that matched.
	Server *VirtualServer
	// Choices are the real servers with a positive weight and their
	// shares, in the server's order. Empty means IPVS has nowhere to send
	// the packet: the kernel answers with ICMP port unreachable.
	Choices []Choice
}

// Tracer answers, for a plan, which real servers a new connection to a
// virtual server reaches. It describes the long-run shares of the
// scheduler without load: weighted schedulers (wrr, wlc, sed, mh) share
// in proportion to weight; the others (rr, lc, nq, lblc, lblcr, sh, dh)
// share equally among the real servers of positive weight. Real servers of
// weight 0 (draining) take no new connections. A Tracer is safe for
// concurrent use; it must not outlive changes to the plan.
type Tracer struct {
	p     *Plan
	index map[vsKey]int
	bound map[netip.Addr]bool
}

// NewTracer returns a tracer over p.
func NewTracer(p *Plan) *Tracer {
	t := &Tracer{p: p, index: make(map[vsKey]int, len(p.VirtualServers)), bound: make(map[netip.Addr]bool, len(p.Addresses))}
	for i := range p.VirtualServers {
		v := &p.VirtualServers[i]
		t.index[vsKey{v.Protocol, v.Addr}] = i
	}
	for _, a := range p.Addresses {
		t.bound[a] = true
	}
	return t
}

// Bound reports whether a is one of the plan's dummy interface addresses.
func (t *Tracer) Bound(a netip.Addr) bool { return t.bound[a] }

// Lookup returns where a new connection of protocol proto to dst goes,
// and false when no virtual server matches.
func (t *Tracer) Lookup(proto Protocol, dst netip.AddrPort) (Lookup, bool) {
	i, ok := t.index[vsKey{proto, dst}]
	if !ok {
		return Lookup{}, false
	}
	v := &t.p.VirtualServers[i]
	weighted := slices.Contains([]Scheduler{WeightedRoundRobin, WeightedLeastConnection, ShortestExpectedDelay, MaglevHashing}, v.SchedulerOrDefault())
	total := 0.0
	for _, r := range v.RealServers {
		if r.Weight > 0 {
			total += share(r.Weight, weighted)
		}
	}
	l := Lookup{Server: v}
	for _, r := range v.RealServers {
		if r.Weight > 0 {
			l.Choices = append(l.Choices, Choice{RealServer: r.Addr, Probability: share(r.Weight, weighted) / total})
		}
	}
	return l, true
}

func share(weight int, weighted bool) float64 {
	if weighted {
		return float64(weight)
	}
	return 1
}
