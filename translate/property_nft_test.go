package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
)

// TestNFTablesTracerAgreesWithResolve is invariant 3 for nftables plans:
// for random valid states and packets aimed at them, tracing the compiled
// nftables plan gives the same verdict, endpoints, probabilities and
// masquerade as proxy.Resolve, once Resolve's answer (which follows
// iptables mode) is adjusted by nftModeAnswer for the few places where
// kube-proxy's nftables mode behaves differently.
func TestNFTablesTracerAgreesWithResolve(t *testing.T) {
	states := *propStates
	if testing.Short() {
		states = 50
	}
	checked := 0
	var adjusted [5]int
	for i := range states {
		seed := *propSeed + uint64(i)
		g := randstate.New(seed)
		st := g.State()
		plan, err := Compile(st, ModeNFTables)
		if err != nil {
			t.Fatalf("seed %d: Compile: %v", seed, err)
		}
		tracers := map[nftables.Family]*nftables.Tracer{}
		for _, p := range plan.NFTables {
			if err := p.Validate(); err != nil {
				t.Fatalf("seed %d: %s plan does not validate: %v", seed, p.FamilyOrDefault(), err)
			}
			tr, err := nftables.NewTracer(p, nftables.WithLocalAddrs(st.Node.IPs))
			if err != nil {
				t.Fatalf("seed %d: NewTracer(%s): %v", seed, p.FamilyOrDefault(), err)
			}
			tracers[p.FamilyOrDefault()] = tr
		}
		for range *propPackets {
			pkt := g.Packet(st)
			fam := nftables.IPv4
			if pkt.Dst.Addr().Is6() {
				fam = nftables.IPv6
			}
			tr := tracers[fam]
			if tr == nil {
				t.Fatalf("seed %d: no %s plan", seed, fam)
			}
			got, err := nftTraceAnswer(tr, pkt)
			if err != nil {
				t.Fatalf("seed %d: Trace(%v): %v", seed, pkt, err)
			}
			resolved := proxy.Resolve(st, pkt)
			want, rule := nftModeAnswer(st, pkt, resolved)
			if want.Verdict != resolved.Verdict {
				adjusted[rule]++
			}
			if msg := compareAnswers(want, got); msg != "" {
				p := plan.NFTables[slices.IndexFunc(plan.NFTables, func(p *nftables.Plan) bool { return p.FamilyOrDefault() == fam })]
				t.Fatalf("seed %d: packet %s -> %s %s fromNode=%v:\n%s\nResolve: %+v\nstate: %+v\nplan:\n%s",
					seed, pkt.Src, pkt.Dst, pkt.Protocol, pkt.FromNode, msg, resolved, st, p)
			}
			checked++
		}
	}
	t.Logf("%d packets over %d states agree; verdicts changed by mode difference 1: %d, 2: %d, 3: %d, 4: %d",
		checked, states, adjusted[1], adjusted[2], adjusted[3], adjusted[4])
}

// nftTraceAnswer traces pkt and expresses the outcome as a proxy.Answer.
func nftTraceAnswer(tr *nftables.Tracer, pkt proxy.Packet) (proxy.Answer, error) {
	hook := nftables.HookPrerouting
	if pkt.FromNode {
		hook = nftables.HookOutput
	}
	proto := pkt.Protocol
	if proto == "" {
		proto = proxy.ProtocolTCP
	}
	res, err := tr.Trace(nftables.Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: strings.ToLower(string(proto)), Hook: hook})
	if err != nil {
		return proxy.Answer{}, err
	}
	var a proxy.Answer
	for _, o := range res.Outcomes {
		var v proxy.Verdict
		switch {
		case o.Verdict == nftables.VerdictDrop:
			v = proxy.VerdictDrop
		case o.Verdict == nftables.VerdictReject:
			v = proxy.VerdictReject
		case o.DNAT:
			v = proxy.VerdictForward
			a.Choices = append(a.Choices, proxy.Choice{Endpoint: o.Dst, Probability: o.Probability, Masquerade: o.Masquerade})
		default:
			v = proxy.VerdictPass
		}
		if a.Verdict != "" && a.Verdict != v {
			return a, fmt.Errorf("mixed outcomes %s and %s: %s", a.Verdict, v, res)
		}
		a.Verdict = v
	}
	slices.SortFunc(a.Choices, func(x, y proxy.Choice) int { return x.Endpoint.Compare(y.Endpoint) })
	return a, nil
}

// nftModeAnswer adjusts want, Resolve's answer for pkt (iptables mode's
// behaviour), for the places where kube-proxy's nftables mode behaves
// differently. Each is a fact of kube-proxy's nftables proxier, in the
// order a packet meets them:
//
//  1. No localhost NodePorts and no martian drop: the NodePort rules
//     carry "ip daddr != 127.0.0.0/8" ("ip6 daddr != ::1"), and nothing
//     like kubelet's KUBE-FIREWALL drops non-loopback packets to
//     127.0.0.0/8. A packet to a loopback address passes.
//  2. Node-originated packets meet service-endpoints-check in
//     filter-output, which runs before nat-output (priority dstnat-10),
//     and @no-endpoint-services holds external and load balancer IPs as
//     well as cluster IPs. So the node's own packets to an external or
//     load balancer IP of a port without (local) endpoints are rejected
//     (no endpoints) or dropped (none local) before DNAT could
//     short-circuit them; iptables mode checks only cluster IPs on
//     OUTPUT.
//  3. Load balancer source ranges apply whether or not the port has
//     endpoints (usesFWChain does not test hasEndpoints): a packet from
//     outside the ranges to such a load balancer IP is dropped in
//     filter-prerouting or filter-output, where iptables mode would
//     reject it for having no endpoints.
//  4. cluster-ips-check rejects packets to a cluster IP that no rule
//     translated (a port or protocol the service does not have), on the
//     forward and output paths; iptables mode lets them pass.
//
// It also returns the number of the difference that decided the answer,
// 0 for none.
func nftModeAnswer(st *proxy.State, pkt proxy.Packet, want proxy.Answer) (proxy.Answer, int) {
	dst := pkt.Dst.Addr()
	if dst.IsLoopback() {
		return proxy.Answer{Verdict: proxy.VerdictPass}, 1
	}
	m := newNFTModel(st, pkt)
	if pkt.FromNode {
		if v, ok := m.noEndpoint[m.key(dst)]; ok {
			return proxy.Answer{Verdict: v}, 2
		}
	}
	if allowed, ok := m.firewall[m.key(dst)]; ok && !allowed(pkt.Src) {
		return proxy.Answer{Verdict: proxy.VerdictDrop}, 3
	}
	local := slices.Contains(st.Node.IPs, dst)
	if want.Verdict == proxy.VerdictPass && m.clusterIPs[dst] && (pkt.FromNode || !local) {
		return proxy.Answer{Verdict: proxy.VerdictReject}, 4
	}
	return want, 0
}

// nftModel is what nftModeAnswer needs to know of the nftables maps,
// worked out from the state the way kube-proxy's proxier does, for the
// packet's family.
type nftModel struct {
	proto proxy.Protocol
	port  uint16
	// noEndpoint maps the no-endpoint-services keys to their verdict; the
	// first service port with a key wins.
	noEndpoint map[nftModelKey]proxy.Verdict
	// firewall maps the firewall-ips keys to the sources they allow.
	firewall   map[nftModelKey]func(netip.Addr) bool
	clusterIPs map[netip.Addr]bool
}

type nftModelKey struct {
	addr  netip.Addr
	proto proxy.Protocol
	port  uint16
}

func (m *nftModel) key(a netip.Addr) nftModelKey { return nftModelKey{a, m.proto, m.port} }

func newNFTModel(st *proxy.State, pkt proxy.Packet) *nftModel {
	ipv6 := pkt.Dst.Addr().Is6()
	m := &nftModel{proto: pkt.Protocol, port: pkt.Dst.Port(), noEndpoint: map[nftModelKey]proxy.Verdict{},
		firewall: map[nftModelKey]func(netip.Addr) bool{}, clusterIPs: map[netip.Addr]bool{}}
	if m.proto == "" {
		m.proto = proxy.ProtocolTCP
	}
	of := func(as []netip.Addr) []netip.Addr {
		return slices.DeleteFunc(slices.Clone(as), func(a netip.Addr) bool { return a.Is6() != ipv6 })
	}
	for _, svc := range sortedByName(st) {
		cips := of(svc.ClusterIPs)
		if len(cips) == 0 {
			continue
		}
		m.clusterIPs[cips[0]] = true
		for j := range svc.Ports {
			m.addPort(st, svc, &svc.Ports[j], cips[0], of, ipv6)
		}
	}
	return m
}

// addPort adds the keys of one service port.
func (m *nftModel) addPort(st *proxy.State, svc *proxy.Service, port *proxy.ServicePort, cip netip.Addr, of func([]netip.Addr) []netip.Addr, ipv6 bool) {
	pe := proxy.SelectEndpoints(st, svc, port, ipv6)
	hasInternal := pe.HasAny && (!svc.InternalLocal() || len(pe.Local) > 0)
	hasExternal := pe.HasAny && (!svc.ExternalLocal() || len(pe.Local) > 0)
	verdict := proxy.VerdictDrop
	if !pe.HasAny {
		verdict = proxy.VerdictReject
	}
	key := func(a netip.Addr) nftModelKey { return nftModelKey{a, port.ProtocolOrDefault(), uint16(port.Port)} }
	add := func(a netip.Addr) {
		if _, dup := m.noEndpoint[key(a)]; !dup {
			m.noEndpoint[key(a)] = verdict
		}
	}
	if !hasInternal {
		add(cip)
	}
	lbs := of(svc.LoadBalancerIPs)
	if !hasExternal {
		for _, a := range append(of(svc.ExternalIPs), lbs...) {
			add(a)
		}
	}
	var ranges []netip.Prefix
	for _, r := range svc.LoadBalancerSourceRanges {
		if r.Addr().Is6() == ipv6 {
			ranges = append(ranges, r)
		}
	}
	if len(lbs) == 0 || len(ranges) == 0 {
		return
	}
	nodeIP, hasNodeIP := st.PrimaryNodeIP(ipv6)
	fromNode := hasNodeIP && slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(nodeIP) })
	allowed := func(src netip.Addr) bool {
		return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(src) }) ||
			fromNode && slices.Contains(lbs, src)
	}
	for _, a := range lbs {
		if _, dup := m.firewall[key(a)]; !dup {
			m.firewall[key(a)] = allowed
		}
	}
}

func sortedByName(st *proxy.State) []*proxy.Service {
	out := make([]*proxy.Service, len(st.Services))
	for i := range st.Services {
		out[i] = &st.Services[i]
	}
	slices.SortFunc(out, func(a, b *proxy.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}
