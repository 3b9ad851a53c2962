package translate

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
)

// matches reports whether the rule's matches all hold for s.
func (t *IPVSTracer) matches(tr *tracedRule, s *pktState) (bool, error) {
	if m := tr.ipvsMatch; m != nil {
		return s.vs != nil && s.src == m.src && s.vs.Addr.Port() == m.port &&
			protoNumber[ipset.Protocol(s.vs.Protocol)] == m.proto, nil
	}
	r := &tr.r
	if r.Protocol != "" && (r.Protocol == s.proto) == r.NotProtocol {
		return false, nil
	}
	if !prefixMatch(r.Source, s.src) || !prefixMatch(r.Destination, s.dst.Addr()) {
		return false, nil
	}
	if r.InInterface.Name != "" || r.OutInterface.Name != "" || r.SourcePort != nil || r.DestinationPort != nil ||
		r.Multiport != nil || r.Statistic != nil || r.Recent != nil {
		return false, fmt.Errorf("rule %q: a match the IPVS tracer does not evaluate", r.Canonical(iptables.IPv4))
	}
	if m := r.AddrType; m != nil {
		if len(m.SrcTypes) > 0 && (slices.Contains(m.SrcTypes, "LOCAL") && t.isLocal(s.src)) == m.NotSrc {
			return false, nil
		}
		if len(m.DstTypes) > 0 && (slices.Contains(m.DstTypes, "LOCAL") && t.isLocal(s.dst.Addr())) == m.NotDst {
			return false, nil
		}
	}
	if m := r.Mark; m != nil && (s.mark&m.Mask == m.Value) == m.Invert {
		return false, nil
	}
	if m := r.ConnState; m != nil && slices.Contains(m.States, "NEW") == m.Invert {
		return false, nil
	}
	if m := r.Physdev; m != nil && m.IsIn != nil && *m.IsIn {
		// Packets are not bridged: --physdev-is-in holds for none.
		return false, nil
	}
	for _, sm := range r.Sets {
		in, err := t.inSet(sm, s)
		if err != nil {
			return false, err
		}
		if in == sm.Invert {
			return false, nil
		}
	}
	return true, nil
}

func prefixMatch(m iptables.AddrMatch, a netip.Addr) bool {
	if !m.Prefix.IsValid() {
		return true
	}
	return m.Prefix.Contains(a) != m.Invert
}

// inSet reports whether the packet, read in the directions of the match,
// is a member of the set.
func (t *IPVSTracer) inSet(m iptables.SetMatch, s *pktState) (bool, error) {
	set := t.sets[m.Name]
	if set == nil {
		return false, fmt.Errorf("set %s: not in the plan", m.Name)
	}
	addr := func(i int) netip.Addr {
		if i < len(m.Flags) && m.Flags[i] == "src" {
			return s.src
		}
		return s.dst.Addr()
	}
	port := func(i int) uint16 {
		if i < len(m.Flags) && m.Flags[i] == "src" {
			return 0 // the tracer's packets have no source port
		}
		return s.dst.Port()
	}
	if set.Type != ipset.TypeHashIP && set.Type != ipset.TypeBitmapPort && s.proto != "tcp" && s.proto != "udp" && s.proto != "sctp" {
		return false, nil
	}
	proto := ipset.Protocol(s.proto)
	switch set.Type {
	case ipset.TypeHashIP:
		return set.Contains(ipset.Entry{IP: addr(0)}), nil
	case ipset.TypeBitmapPort:
		return set.Contains(ipset.Entry{Port: port(0)}), nil
	case ipset.TypeHashIPPort:
		return set.Contains(ipset.Entry{IP: addr(0), Protocol: proto, Port: port(1)}), nil
	case ipset.TypeHashIPPortIP:
		return set.Contains(ipset.Entry{IP: addr(0), Protocol: proto, Port: port(1), IP2: addr(2)}), nil
	case ipset.TypeHashIPPortNet:
		ip2 := addr(2)
		for _, e := range set.Entries {
			if e.IP == addr(0) && e.Protocol == proto && e.Port == port(1) && e.Net.Contains(ip2) {
				return true, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("set %s: type %s not evaluated", m.Name, set.Type)
}
