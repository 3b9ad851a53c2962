package translate

import (
	"flag"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
)

var (
	propStates  = flag.Int("prop.states", 300, "random states in the property test")
	propPackets = flag.Int("prop.packets", 60, "random packets per state in the property test")
	propSeed    = flag.Uint64("prop.seed", 1, "seed of the property test")
)

// TestTracerAgreesWithResolve is invariant 3: for random valid states and
// packets aimed at them, tracing the compiled iptables plan gives the same
// verdict, endpoints, probabilities and masquerade as proxy.Resolve.
func TestTracerAgreesWithResolve(t *testing.T) {
	states := *propStates
	if testing.Short() {
		states = 50
	}
	checked := 0
	for i := range states {
		seed := *propSeed + uint64(i)
		g := randstate.New(seed)
		st := g.State()
		if err := st.Validate(); err != nil {
			t.Fatalf("seed %d: generator made an invalid state: %v", seed, err)
		}
		plan, err := Compile(st, ModeIPTables)
		if err != nil {
			t.Fatalf("seed %d: Compile: %v", seed, err)
		}
		tracers := map[iptables.Family]*iptables.Tracer{}
		for _, p := range plan.IPTables {
			tr, err := iptables.NewTracer(p, iptables.WithLocalAddrs(st.Node.IPs))
			if err != nil {
				t.Fatalf("seed %d: NewTracer(%s): %v", seed, p.FamilyOrDefault(), err)
			}
			tracers[p.FamilyOrDefault()] = tr
		}
		for range *propPackets {
			pkt := g.Packet(st)
			fam := iptables.IPv4
			if pkt.Dst.Addr().Is6() {
				fam = iptables.IPv6
			}
			tr := tracers[fam]
			if tr == nil {
				t.Fatalf("seed %d: no %s plan", seed, fam)
			}
			got, err := traceAnswer(tr, pkt)
			if err != nil {
				t.Fatalf("seed %d: Trace(%v): %v", seed, pkt, err)
			}
			want := proxy.Resolve(st, pkt)
			if msg := compareAnswers(want, got); msg != "" {
				t.Fatalf("seed %d: packet %s -> %s %s fromNode=%v:\n%s\nstate: %+v\nplan:\n%s",
					seed, pkt.Src, pkt.Dst, pkt.Protocol, pkt.FromNode, msg, st, plan.IPTables[slices.IndexFunc(plan.IPTables, func(p *iptables.Plan) bool { return p.FamilyOrDefault() == fam })])
			}
			checked++
		}
	}
	t.Logf("%d packets over %d states agree", checked, states)
}

// traceAnswer traces pkt and expresses the outcome as a proxy.Answer.
func traceAnswer(tr *iptables.Tracer, pkt proxy.Packet) (proxy.Answer, error) {
	hook := iptables.HookPrerouting
	if pkt.FromNode {
		hook = iptables.HookOutput
	}
	proto := pkt.Protocol
	if proto == "" {
		proto = proxy.ProtocolTCP
	}
	res, err := tr.Trace(iptables.Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: strings.ToLower(string(proto)), Hook: hook})
	if err != nil {
		return proxy.Answer{}, err
	}
	var a proxy.Answer
	for _, o := range res.Outcomes {
		var v proxy.Verdict
		switch {
		case o.Verdict == iptables.VerdictDrop:
			v = proxy.VerdictDrop
		case o.Verdict == iptables.VerdictReject:
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

// compareAnswers reports how got differs from want, ignoring the service
// name (the tracer does not know it) and allowing for the 10-decimal
// probabilities in the rules.
func compareAnswers(want, got proxy.Answer) string {
	if want.Verdict != got.Verdict {
		return fmt.Sprintf("verdict: Resolve says %s (%s), tracer %s %v", want.Verdict, want.ServicePort, got.Verdict, got.Choices)
	}
	merged := map[netip.AddrPort]proxy.Choice{}
	for _, c := range got.Choices {
		m := merged[c.Endpoint]
		if m.Probability > 0 && m.Masquerade != c.Masquerade {
			return fmt.Sprintf("endpoint %s reached both with and without masquerade", c.Endpoint)
		}
		c.Probability += m.Probability
		merged[c.Endpoint] = c
	}
	if len(merged) != len(want.Choices) {
		return fmt.Sprintf("choices: Resolve %v, tracer %v", want.Choices, got.Choices)
	}
	for _, w := range want.Choices {
		g, ok := merged[w.Endpoint]
		if !ok || math.Abs(g.Probability-w.Probability) > 1e-6 || g.Masquerade != w.Masquerade {
			return fmt.Sprintf("choice %v: Resolve %v, tracer %v", w.Endpoint, want.Choices, got.Choices)
		}
	}
	return ""
}
