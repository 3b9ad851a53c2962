package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// ErrNotIPVSPlan is returned by [NewIPVSTracer] for a plan of another
// mode.
var ErrNotIPVSPlan = errors.New("not an IPVS-mode plan")

// IPVSTracer answers where the first packet of a connection goes in an
// IPVS-mode plan, the way the kernel handles it: nat PREROUTING (OUTPUT
// for a packet the node sends) walks the fixed rules, matching the ipsets
// by their members; a packet for a local address walks filter INPUT
// (which may drop or reject it); IPVS then picks a real server of the
// virtual server (per [ipvs.Tracer]), or rejects when it has none; and
// nat POSTROUTING decides masquerade per real server. It evaluates the
// rules themselves, so it checks the sets, the rules and the virtual
// servers together. An IPVSTracer is safe for concurrent use.
type IPVSTracer struct {
	plan  *Plan
	local map[netip.Addr]bool
	sets  map[string]*ipset.Set
	vs    *ipvs.Tracer
	rules map[iptables.Family]map[string][]tracedRule
	jumps map[iptables.Family][]iptables.Jump
}

type tracedRule struct {
	r iptables.Rule
	// ipvsMatch is set for a "-m ipvs" rule, which iptables.Rule cannot
	// hold: it matches a packet sent from Src to the virtual server.
	ipvsMatch *ipvsMatch
}

type ipvsMatch struct {
	src   netip.Addr
	proto int
	port  uint16
}

// NewIPVSTracer returns a tracer over p, a plan of ModeIPVS; nodeAddrs are
// the node's own addresses (besides those on the dummy interface and
// loopback). It reports a rule it cannot evaluate.
func NewIPVSTracer(p *Plan, nodeAddrs []netip.Addr) (*IPVSTracer, error) {
	if p.Mode != ModeIPVS || p.IPVS == nil || p.IPSets == nil {
		return nil, ErrNotIPVSPlan
	}
	t := &IPVSTracer{plan: p, local: map[netip.Addr]bool{}, sets: map[string]*ipset.Set{},
		vs: ipvs.NewTracer(p.IPVS), rules: map[iptables.Family]map[string][]tracedRule{},
		jumps: map[iptables.Family][]iptables.Jump{}}
	for _, a := range append(slices.Clip(nodeAddrs), p.IPVS.Addresses...) {
		t.local[a] = true
	}
	for i := range p.IPSets.Sets {
		t.sets[p.IPSets.Sets[i].Name] = &p.IPSets.Sets[i]
	}
	for _, ip := range p.IPTables {
		fam := ip.FamilyOrDefault()
		chains := map[string][]tracedRule{}
		for _, tc := range ip.Tables {
			for i := range tc.Chains {
				c := &tc.Chains[i]
				for _, text := range c.Rules() {
					tr, err := parseTracedRule(text)
					if err != nil {
						return nil, fmt.Errorf("%s %s %s: rule %q: %w", fam, tc.Table, c.Name, text, err)
					}
					key := string(tc.Table) + "/" + c.Name
					chains[key] = append(chains[key], tr)
				}
			}
		}
		t.rules[fam] = chains
		t.jumps[fam] = ip.Jumps
	}
	return t, nil
}

func parseTracedRule(text string) (tracedRule, error) {
	if strings.Contains(text, " -m ipvs ") {
		var src, vaddr string
		var m ipvsMatch
		if _, err := fmt.Sscanf(text, "-s %s -m ipvs --vproto %d --vaddr %s --vport %d -j DROP", &src, &m.proto, &vaddr, &m.port); err != nil {
			return tracedRule{}, err
		}
		pfx, err := netip.ParsePrefix(src)
		if err != nil {
			return tracedRule{}, err
		}
		m.src = pfx.Addr()
		return tracedRule{r: iptables.Rule{Target: "DROP"}, ipvsMatch: &m}, nil
	}
	r, err := iptables.ParseRule(text)
	return tracedRule{r: r}, err
}

// IPVSTrace is what happened to a traced packet.
type IPVSTrace struct {
	// Answer is the verdict, with the real servers (as proxy.Choice
	// endpoints) of a forwarded packet and their masquerade.
	Answer proxy.Answer
	// VirtualServer is the virtual server that took the packet, or nil.
	VirtualServer *ipvs.VirtualServer
	// Steps say which rules decided, for people.
	Steps []string
}

// pktState is a packet during a walk.
type pktState struct {
	src      netip.Addr
	dst      netip.AddrPort
	proto    string
	mark     uint32
	masq     bool
	fromNode bool
	vs       *ipvs.VirtualServer
}

type walkVerdict int

const (
	walkContinue walkVerdict = iota
	walkAccept
	walkDrop
	walkReject
)

// Trace follows pkt through the plan.
func (t *IPVSTracer) Trace(pkt proxy.Packet) (IPVSTrace, error) {
	var res IPVSTrace
	ipv6 := pkt.Dst.Addr().Is6()
	fam := iptables.IPv4
	if ipv6 {
		fam = iptables.IPv6
	}
	if _, ok := t.rules[fam]; !ok || !pkt.Src.IsValid() || pkt.Src.Is6() != ipv6 {
		res.Answer.Verdict = proxy.VerdictPass
		return res, nil
	}
	proto := proxy.ProtocolTCP
	if pkt.Protocol != "" {
		proto = pkt.Protocol
	}
	s := &pktState{src: pkt.Src, dst: pkt.Dst, proto: strings.ToLower(string(proto)), fromNode: pkt.FromNode}
	hook := "PREROUTING"
	if pkt.FromNode {
		hook = "OUTPUT"
	}
	if _, err := t.hook(fam, iptables.TableNAT, hook, s, &res); err != nil {
		return res, err
	}
	l, hasVS := t.vs.Lookup(ipvs.Protocol(s.proto), s.dst)
	if !pkt.FromNode && t.isLocal(s.dst.Addr()) {
		v, err := t.hook(fam, iptables.TableFilter, "INPUT", s, &res)
		if err != nil {
			return res, err
		}
		if v == walkDrop || v == walkReject {
			res.Answer.Verdict = map[walkVerdict]proxy.Verdict{walkDrop: proxy.VerdictDrop, walkReject: proxy.VerdictReject}[v]
			return res, nil
		}
	}
	if !hasVS {
		res.Answer.Verdict = proxy.VerdictPass
		res.Steps = append(res.Steps, "no virtual server: not proxied")
		return res, nil
	}
	res.VirtualServer, s.vs = l.Server, l.Server
	if len(l.Choices) == 0 {
		res.Answer.Verdict = proxy.VerdictReject
		res.Steps = append(res.Steps, "virtual server "+s.dst.String()+" has no real server of positive weight: ICMP port unreachable")
		return res, nil
	}
	return t.forward(fam, s, l, res)
}

// forward walks filter OUTPUT and nat POSTROUTING for each real server.
func (t *IPVSTracer) forward(fam iptables.Family, s *pktState, l ipvs.Lookup, res IPVSTrace) (IPVSTrace, error) {
	res.Answer.Verdict = proxy.VerdictForward
	v, err := t.hook(fam, iptables.TableFilter, "OUTPUT", s, &res)
	if err != nil {
		return res, err
	}
	if v == walkDrop || v == walkReject {
		res.Answer.Verdict = map[walkVerdict]proxy.Verdict{walkDrop: proxy.VerdictDrop, walkReject: proxy.VerdictReject}[v]
		return res, nil
	}
	for _, c := range l.Choices {
		rs := *s
		rs.dst = c.RealServer
		if _, err := t.hook(fam, iptables.TableNAT, "POSTROUTING", &rs, nil); err != nil {
			return res, err
		}
		res.Answer.Choices = append(res.Answer.Choices, proxy.Choice{Endpoint: c.RealServer, Probability: c.Probability, Masquerade: rs.masq})
	}
	slices.SortFunc(res.Answer.Choices, func(x, y proxy.Choice) int { return x.Endpoint.Compare(y.Endpoint) })
	res.Steps = append(res.Steps, fmt.Sprintf("IPVS %s %s (%s) over %d real servers", l.Server.Protocol, l.Server.Addr, l.Server.SchedulerOrDefault(), len(l.Choices)))
	return res, nil
}

func (t *IPVSTracer) isLocal(a netip.Addr) bool { return a.IsLoopback() || t.local[a] }

// hook runs the plan's jumps from one built-in chain.
func (t *IPVSTracer) hook(fam iptables.Family, table iptables.Table, chain string, s *pktState, res *IPVSTrace) (walkVerdict, error) {
	for _, j := range t.jumps[fam] {
		if j.Table != table || j.Chain != chain || len(j.Match) > 0 {
			continue
		}
		v, err := t.walk(fam, string(table)+"/"+j.Target, s, res, 0)
		if err != nil || v != walkContinue {
			return v, err
		}
	}
	return walkContinue, nil
}

func (t *IPVSTracer) walk(fam iptables.Family, chain string, s *pktState, res *IPVSTrace, depth int) (walkVerdict, error) {
	if depth > 16 {
		return 0, fmt.Errorf("chain %s: jumps nested too deep", chain)
	}
	for _, tr := range t.rules[fam][chain] {
		ok, err := t.matches(&tr, s)
		if err != nil {
			return 0, fmt.Errorf("chain %s: %w", chain, err)
		}
		if !ok {
			continue
		}
		r := &tr.r
		switch r.Target {
		case "":
			continue
		case "RETURN":
			return walkContinue, nil
		case "ACCEPT":
			return walkAccept, nil
		case "DROP":
			t.step(res, chain, r, "drop")
			return walkDrop, nil
		case "REJECT":
			t.step(res, chain, r, "reject")
			return walkReject, nil
		case "MARK":
			if m := r.TargetOptions.Mark; m != nil {
				s.mark = m.Apply(s.mark)
			}
		case "MASQUERADE":
			s.masq = true
			return walkAccept, nil
		default:
			table, _, _ := strings.Cut(chain, "/")
			v, err := t.walk(fam, table+"/"+r.Target, s, res, depth+1)
			if err != nil || v != walkContinue {
				return v, err
			}
		}
	}
	return walkContinue, nil
}

func (t *IPVSTracer) step(res *IPVSTrace, chain string, r *iptables.Rule, what string) {
	if res != nil {
		res.Steps = append(res.Steps, fmt.Sprintf("%s: %s (%s)", chain, what, r.Canonical(iptables.IPv4)))
	}
}
