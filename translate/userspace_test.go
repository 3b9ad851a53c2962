package translate

import (
	"errors"
	"fmt"

	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/userspace"
)

func userspaceGoldenCases() []goldenCase {
	var cases []goldenCase
	for _, tc := range goldenCases() {
		// These differ from their base state only by iptables-mode
		// options.
		if len(tc.opts) == 0 {
			cases = append(cases, tc)
		}
	}
	udp := clusterIP("ns1", "dns", "172.30.0.53", ep("10.180.0.53", "dns", 53))
	udp.Ports = []proxy.ServicePort{{Name: "dns", Protocol: proxy.ProtocolUDP, Port: 53}}
	return append(cases,
		goldenCase{name: "bind-address", st: dualStackState(), opts: []Option{
			WithUserspaceBindAddress(netip.MustParseAddr("192.168.0.2")),
			WithUserspaceBindAddress(netip.MustParseAddr("fd00::2")),
		}},
		goldenCase{name: "udp-idle-timeout", st: baseState(udp), opts: []Option{WithUDPIdleTimeout(2 * time.Second)}},
		goldenCase{name: "port-range", st: localPolicyState(), opts: []Option{
			WithUserspacePortRange(proxy.PortRange{Min: 40000, Max: 40009}),
			WithUserspacePorts(map[string]int{"tcp/ns5/svc5:p80": 40007, "tcp/ns2/svc2:p80 (local)": 39999}),
		}},
		goldenCase{name: "no-node-address", st: &proxy.State{Services: []proxy.Service{
			withType(clusterIP("ns1", "svc1", "172.30.0.41", ep("10.180.0.1", "p80", 80)), proxy.ServiceTypeNodePort, 30001),
		}}},
	)
}

func TestCompileUserspaceGolden(t *testing.T) {
	for _, tc := range userspaceGoldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := compileUserspaceText(t, tc.st, tc.opts...)
			checkGolden(t, filepath.Join("testdata", "us-"+tc.name+".golden"), got, "Compile("+tc.name+", ModeUserspace)")
		})
	}
}

// compileUserspaceText compiles st in userspace mode and returns the
// listener table and the portal rules, each part after a comment line.
// Every part must validate.
func compileUserspaceText(t *testing.T, st *proxy.State, opts ...Option) string {
	t.Helper()
	p, err := Compile(st, ModeUserspace, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if p.Userspace == nil {
		t.Fatal("Compile(ModeUserspace).Userspace = nil")
	}
	if err := p.Userspace.Validate(); err != nil {
		t.Errorf("userspace plan does not validate: %v", err)
	}
	var b strings.Builder
	b.WriteString("# userspace listeners\n")
	b.WriteString(p.Userspace.String())
	for _, ip := range p.IPTables {
		if err := ip.Validate(); err != nil {
			t.Errorf("%s plan does not validate: %v", ip.FamilyOrDefault(), err)
		}
		b.WriteString("# " + string(ip.FamilyOrDefault()) + " portals\n")
		b.WriteString(ip.String())
	}
	return b.String()
}

func TestCompileUserspaceDeterministic(t *testing.T) {
	for _, tc := range append(userspaceGoldenCases(), goldenCase{name: "bench", st: benchState(200, 5)}) {
		t.Run(tc.name, func(t *testing.T) {
			want := compileUserspaceText(t, tc.st, tc.opts...)
			r := rand.New(rand.NewPCG(1, 2))
			for range 3 {
				if got := compileUserspaceText(t, shuffled(tc.st, r), tc.opts...); got != want {
					t.Fatalf("shuffled state gives other text:\n%s", cmp.Diff(want, got))
				}
			}
		})
	}
}

// TestUserspacePortsStable compiles a state, changes it, and compiles
// again with the first plan's ports: every listener still there keeps its
// port, new ones take the lowest free ports, none is given twice.
func TestUserspacePortsStable(t *testing.T) {
	svc := func(name, ip string) proxy.Service {
		return clusterIP("ns", name, ip, ep("10.180.0.1", "p80", 80))
	}
	before := baseState(svc("b", "172.30.0.2"), svc("c", "172.30.0.3"), svc("d", "172.30.0.4"))
	first := userspacePlan(t, before)
	wantFirst := map[string]int{"tcp/ns/b:p80": 20000, "tcp/ns/c:p80": 20001, "tcp/ns/d:p80": 20002}
	if diff := cmp.Diff(wantFirst, first.Ports()); diff != "" {
		t.Fatalf("first ports mismatch (-want +got):\n%s", diff)
	}
	// "a" sorts first and c goes away: without the previous ports, every
	// port would shift.
	local := svc("e", "172.30.0.5")
	local.InternalTrafficPolicy = proxy.TrafficPolicyLocal
	after := baseState(svc("a", "172.30.0.1"), svc("b", "172.30.0.2"), svc("d", "172.30.0.4"), local)
	second := userspacePlan(t, after, WithUserspacePorts(first.Ports()))
	want := map[string]int{"tcp/ns/a:p80": 20001, "tcp/ns/b:p80": 20000, "tcp/ns/d:p80": 20002, "tcp/ns/e:p80 (local)": 20003}
	if diff := cmp.Diff(want, second.Ports()); diff != "" {
		t.Errorf("ports after the change mismatch (-want +got):\n%s", diff)
	}
	// Compiling the same state again with its own ports changes nothing.
	third := userspacePlan(t, after, WithUserspacePorts(second.Ports()))
	if diff := cmp.Diff(second.String(), third.String()); diff != "" {
		t.Errorf("recompiling with the plan's own ports changed it:\n%s", diff)
	}
	// Two previous ports claiming the same number: the first listener in
	// plan order keeps it.
	clash := userspacePlan(t, before, WithUserspacePorts(map[string]int{"tcp/ns/c:p80": 20005, "tcp/ns/d:p80": 20005}))
	if diff := cmp.Diff(map[string]int{"tcp/ns/b:p80": 20000, "tcp/ns/c:p80": 20005, "tcp/ns/d:p80": 20001}, clash.Ports()); diff != "" {
		t.Errorf("ports with a clash mismatch (-want +got):\n%s", diff)
	}
}

// TestUserspacePortsSkipNodePorts checks that no proxy port is a NodePort
// of the state, even when the ranges overlap.
func TestUserspacePortsSkipNodePorts(t *testing.T) {
	np := withType(clusterIP("ns", "a", "172.30.0.1", ep("10.180.0.1", "p80", 80)), proxy.ServiceTypeLoadBalancer, 30000)
	np.HealthCheckNodePort = 30002
	np.ExternalTrafficPolicy = proxy.TrafficPolicyLocal
	st := baseState(np, clusterIP("ns", "b", "172.30.0.2", ep("10.180.0.1", "p80", 80)))
	got := userspacePlan(t, st, WithUserspacePortRange(proxy.PortRange{Min: 30000, Max: 30004}),
		WithUserspacePorts(map[string]int{"tcp/ns/b:p80": 30000}))
	want := map[string]int{"tcp/ns/a:p80": 30001, "tcp/ns/a:p80 (local)": 30003, "tcp/ns/b:p80": 30004}
	if diff := cmp.Diff(want, got.Ports()); diff != "" {
		t.Errorf("ports mismatch (-want +got):\n%s", diff)
	}
}

func userspacePlan(t *testing.T, st *proxy.State, opts ...Option) *userspace.Plan {
	t.Helper()
	p, err := Compile(st, ModeUserspace, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p.Userspace
}

func TestCompileUserspaceErrors(t *testing.T) {
	three := baseState(
		clusterIP("ns", "a", "172.30.0.1", ep("10.180.0.1", "p80", 80)),
		clusterIP("ns", "b", "172.30.0.2", ep("10.180.0.1", "p80", 80)),
		clusterIP("ns", "c", "172.30.0.3", ep("10.180.0.1", "p80", 80)),
	)
	tests := []struct {
		name    string
		opts    []Option
		wantErr error
		wantMsg string
	}{
		{name: "range exhausted", opts: []Option{WithUserspacePortRange(proxy.PortRange{Min: 21000, Max: 21001})},
			wantErr: ErrUserspacePortsExhausted, wantMsg: "service port ns/c:p80 (tcp): no free proxy port in 21000-21001"},
		{name: "bad range", opts: []Option{WithUserspacePortRange(proxy.PortRange{Min: 30, Max: 20})},
			wantMsg: "userspace proxy port range 30-20"},
		{name: "loopback bind address", opts: []Option{WithUserspaceBindAddress(netip.MustParseAddr("127.0.0.1"))},
			wantMsg: "userspace bind address 127.0.0.1"},
		{name: "negative udp timeout", opts: []Option{WithUDPIdleTimeout(-time.Second)},
			wantMsg: "negative UDP idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(three, ModeUserspace, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Compile() = %v, want an error containing %q", err, tt.wantMsg)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Compile() = %v, want it to wrap %v", err, tt.wantErr)
			}
		})
	}
}

// TestUserspaceAgreesWithResolve is invariant 3 for the userspace mode:
// for random states and packets, tracing the portal rules and following
// the packet into the listener it reaches gives the endpoints (each
// equally likely: round robin) and verdict of proxy.Resolve. The proxy
// hides the client's address, so masquerade is not compared. SCTP
// packets, which the userspace mode does not serve, and packets dropped
// by kubelet's localhost firewall, which is not a proxy rule, are left
// out.
func TestUserspaceAgreesWithResolve(t *testing.T) {
	states := *propStates
	if testing.Short() {
		states = 50
	}
	checked := 0
	for i := range states {
		seed := *propSeed + uint64(i)
		g := randstate.New(seed)
		st := g.State()
		plan, err := Compile(st, ModeUserspace)
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
			want := proxy.Resolve(st, pkt)
			if pkt.Protocol == proxy.ProtocolSCTP || (want.Verdict == proxy.VerdictDrop && want.ServicePort == "") {
				continue
			}
			fam := iptables.IPv4
			if pkt.Dst.Addr().Is6() {
				fam = iptables.IPv6
			}
			got, err := traceUserspace(tracers[fam], plan.Userspace, pkt)
			if err != nil {
				t.Fatalf("seed %d: packet %s -> %s %s fromNode=%v: %v", seed, pkt.Src, pkt.Dst, pkt.Protocol, pkt.FromNode, err)
			}
			for i := range want.Choices {
				want.Choices[i].Masquerade = false
			}
			if msg := compareAnswers(want, got); msg != "" {
				t.Fatalf("seed %d: packet %s -> %s %s fromNode=%v:\n%s\nstate: %+v\nlisteners:\n%s", seed, pkt.Src, pkt.Dst, pkt.Protocol, pkt.FromNode, msg, st, plan.Userspace)
			}
			checked++
		}
	}
	t.Logf("%d packets over %d states agree", checked, states)
}

// traceUserspace traces pkt through the portal rules and, when they send
// it to a proxy port, answers with that listener's backends.
func traceUserspace(tr *iptables.Tracer, us *userspace.Plan, pkt proxy.Packet) (proxy.Answer, error) {
	if tr == nil {
		return proxy.Answer{}, fmt.Errorf("no plan of the packet's family")
	}
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
	if len(res.Outcomes) != 1 {
		return proxy.Answer{}, fmt.Errorf("%d outcomes, want 1 (portal rules do not balance): %s", len(res.Outcomes), res)
	}
	o := res.Outcomes[0]
	switch {
	case o.Verdict == iptables.VerdictDrop:
		return proxy.Answer{Verdict: proxy.VerdictDrop}, nil
	case o.Verdict == iptables.VerdictReject:
		return proxy.Answer{Verdict: proxy.VerdictReject}, nil
	case !o.DNAT:
		return proxy.Answer{Verdict: proxy.VerdictPass}, nil
	}
	var l *userspace.Listener
	for i := range us.Listeners {
		c := &us.Listeners[i]
		if c.Addr.Port() == o.Dst.Port() && c.Addr.Addr().Is6() == pkt.Dst.Addr().Is6() && strings.EqualFold(string(c.ProtocolOrDefault()), string(proto)) {
			l = c
		}
	}
	if l == nil {
		return proxy.Answer{}, fmt.Errorf("sent to %s, where no listener is: %s", o.Dst, res)
	}
	if len(l.Backends) == 0 {
		return proxy.Answer{}, fmt.Errorf("sent to listener %s, which has no backends: %s", l.Name, res)
	}
	a := proxy.Answer{Verdict: proxy.VerdictForward, ServicePort: l.Name}
	for _, be := range l.Backends {
		a.Choices = append(a.Choices, proxy.Choice{Endpoint: be, Probability: 1 / float64(len(l.Backends))})
	}
	slices.SortFunc(a.Choices, func(x, y proxy.Choice) int { return x.Endpoint.Compare(y.Endpoint) })
	return a, nil
}
