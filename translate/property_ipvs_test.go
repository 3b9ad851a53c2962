package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/proxy"
)

// ipvsDifference names a documented way in which kube-proxy's IPVS mode
// answers differently from its iptables mode (proxy.Resolve).
type ipvsDifference string

const (
	// Under a Local policy IPVS sends everyone, pods and the node
	// included, to the local endpoints, and when there are none to the
	// cluster endpoints (kubernetes#97081) instead of dropping.
	diffLocalPolicy ipvsDifference = "local policy: local endpoints for all sources, cluster endpoints when none are local"
	// IPVS serves no NodePort on loopback, and there is no kubelet
	// KUBE-FIREWALL rule dropping packets to 127.0.0.0/8.
	diffLoopback ipvsDifference = "loopback destinations"
	// KUBE-IPVS-FILTER rejects new connections to an address on
	// kube-ipvs0 at a port no service uses.
	diffIPVSFilter ipvsDifference = "connections to a service address at another port are rejected"
	// Without endpoints, iptables mode rejects NodePort traffic on every
	// local address; IPVS has virtual servers only on the NodePort
	// addresses, so elsewhere the packet is not proxied.
	diffNodePortElsewhere ipvsDifference = "NodePort without endpoints on a non-NodePort address"
	// Load balancer source ranges drop excluded sources even when the
	// service has no endpoints (iptables mode rejects them then).
	diffFirewallNoEndpoints ipvsDifference = "source ranges drop before the no-endpoints reject"
)

// TestIPVSTracerAgreesWithResolve is invariant 3 for ModeIPVS: for random
// states and packets arriving at the node, the IPVS tracer over the
// compiled ipsets, virtual servers and fixed rules gives the verdict,
// real servers, probabilities and masquerade that proxy.Resolve gives,
// except where a documented mode difference explains the gap. Hairpin
// masquerade is compared only for local endpoints (KUBE-LOOP-BACK holds
// only those). Packets the node sends itself are not compared: IPVS
// handles them at LOCAL_OUT, before filter rules that iptables mode
// applies, and the kernel picks a kube-ipvs0 source address for them.
func TestIPVSTracerAgreesWithResolve(t *testing.T) {
	states := *propStates
	if testing.Short() {
		states = 50
	}
	checked, differ := 0, map[ipvsDifference]int{}
	for i := range states {
		seed := *propSeed + uint64(i)
		g := randstate.New(seed)
		st := g.State()
		plan, err := Compile(st, ModeIPVS)
		if err != nil {
			t.Fatalf("seed %d: Compile: %v", seed, err)
		}
		tr, err := NewIPVSTracer(plan, st.Node.IPs)
		if err != nil {
			t.Fatalf("seed %d: NewIPVSTracer: %v", seed, err)
		}
		for range *propPackets {
			pkt := g.Packet(st)
			if pkt.FromNode {
				continue
			}
			got, err := tr.Trace(pkt)
			if err != nil {
				t.Fatalf("seed %d: Trace(%v): %v", seed, pkt, err)
			}
			want := proxy.Resolve(st, pkt)
			ga := normalizeHairpin(st, pkt, got.Answer)
			wa := normalizeHairpin(st, pkt, want)
			checked++
			msg := compareAnswers(wa, ga)
			if msg == "" {
				continue
			}
			d, ok := classifyIPVSDifference(st, plan, pkt, want, got.Answer)
			if !ok {
				t.Fatalf("seed %d: packet %s -> %s %s:\n%s\nsteps: %v\nstate: %+v\nipvs:\n%s\nsets:\n%s",
					seed, pkt.Src, pkt.Dst, pkt.Protocol, msg, got.Steps, st, plan.IPVS, plan.IPSets)
			}
			differ[d]++
		}
	}
	t.Logf("%d packets over %d states; documented differences: %v", checked, states, differ)
}

// normalizeHairpin drops the masquerade of choices whose endpoint is the
// packet's source but not local: iptables mode masquerades that hairpin,
// IPVS mode (KUBE-LOOP-BACK) only for local endpoints.
func normalizeHairpin(st *proxy.State, pkt proxy.Packet, a proxy.Answer) proxy.Answer {
	out := a
	out.Choices = slices.Clone(a.Choices)
	for i, c := range out.Choices {
		if c.Endpoint.Addr() == pkt.Src && !localEndpoint(st, c.Endpoint.Addr()) {
			out.Choices[i].Masquerade = false
		}
	}
	return out
}

func localEndpoint(st *proxy.State, a netip.Addr) bool {
	for i := range st.Services {
		for _, ep := range st.Services[i].Endpoints {
			if ep.Addr == a && ep.IsLocal(st.Node.Name) {
				return true
			}
		}
	}
	return false
}

// classifyIPVSDifference says which documented difference explains why
// the IPVS answer got differs from want, if one does.
func classifyIPVSDifference(st *proxy.State, p *Plan, pkt proxy.Packet, want, got proxy.Answer) (ipvsDifference, bool) {
	dst := pkt.Dst.Addr()
	if dst.IsLoopback() {
		return diffLoopback, true
	}
	if svc := serviceNamed(st, want.ServicePort); svc != nil && (svc.InternalLocal() || svc.ExternalLocal()) {
		return diffLocalPolicy, true
	}
	if v := p.IPVS.VirtualServer(ipvsProto(pkt), pkt.Dst); v != nil {
		if svc := serviceAt(st, pkt); svc != nil && (svc.InternalLocal() || svc.ExternalLocal()) {
			return diffLocalPolicy, true
		}
	}
	if svc := serviceNamed(st, want.ServicePort); svc != nil && want.Verdict == proxy.VerdictReject &&
		got.Verdict == proxy.VerdictDrop && len(svc.LoadBalancerSourceRanges) > 0 {
		return diffFirewallNoEndpoints, true
	}
	if want.Verdict == proxy.VerdictPass && got.Verdict == proxy.VerdictReject && slices.Contains(p.IPVS.Addresses, dst) {
		return diffIPVSFilter, true
	}
	if got.Verdict == proxy.VerdictPass && (want.Verdict == proxy.VerdictReject || want.Verdict == proxy.VerdictDrop) &&
		!slices.Contains(ipvsNodeIPs(st, dst.Is6()), dst) {
		return diffNodePortElsewhere, true
	}
	return "", false
}

func ipvsProto(pkt proxy.Packet) ipvs.Protocol {
	if pkt.Protocol == "" {
		return "tcp"
	}
	return ipvs.Protocol(strings.ToLower(string(pkt.Protocol)))
}

// serviceNamed returns the service of a "ns/name:port" service port name.
func serviceNamed(st *proxy.State, portName string) *proxy.Service {
	for i := range st.Services {
		s := &st.Services[i]
		for j := range s.Ports {
			if proxy.ServicePortName(s, &s.Ports[j]) == portName {
				return s
			}
		}
	}
	return nil
}

// serviceAt returns the first service (in service order) with a virtual
// server at the packet's destination.
func serviceAt(st *proxy.State, pkt proxy.Packet) *proxy.Service {
	proto := proxy.ProtocolTCP
	if pkt.Protocol != "" {
		proto = pkt.Protocol
	}
	var best *proxy.Service
	for i := range st.Services {
		s := &st.Services[i]
		for j := range s.Ports {
			sp := &s.Ports[j]
			if sp.ProtocolOrDefault() != proto {
				continue
			}
			hit := false
			for _, a := range append(append(slices.Clone(s.ClusterIPs), s.ExternalIPs...), s.LoadBalancerIPs...) {
				hit = hit || netip.AddrPortFrom(a, uint16(sp.Port)) == pkt.Dst
			}
			hit = hit || (sp.NodePort != 0 && int(pkt.Dst.Port()) == sp.NodePort)
			if hit && (best == nil || fmt.Sprint(s.Namespace, "/", s.Name) < fmt.Sprint(best.Namespace, "/", best.Name)) {
				best = s
			}
		}
	}
	return best
}
