package nftables

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var nodeIP = netip.MustParseAddr("192.168.0.2")

func outcome(p float64, v Verdict, dst string, dnat, masq bool) Outcome {
	return Outcome{Probability: p, Verdict: v, Dst: netip.MustParseAddrPort(dst), DNAT: dnat, Masquerade: masq}
}

func TestTrace(t *testing.T) {
	tr, err := NewTracer(testPlan(t), WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pkt  Packet
		want []Outcome
	}{
		{"pod to cluster IP", Packet{Src: netip.MustParseAddr("10.0.5.5"), Dst: netip.MustParseAddrPort("172.30.0.1:80"), Protocol: "tcp", Hook: HookPrerouting},
			[]Outcome{outcome(0.5, VerdictAccept, "10.0.1.1:8080", true, false), outcome(0.5, VerdictAccept, "10.0.2.2:8080", true, false)}},
		{"outside to cluster IP", Packet{Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddrPort("172.30.0.1:80"), Protocol: "TCP", Hook: HookPrerouting},
			[]Outcome{outcome(0.5, VerdictAccept, "10.0.1.1:8080", true, true), outcome(0.5, VerdictAccept, "10.0.2.2:8080", true, true)}},
		{"hairpin", Packet{Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddrPort("172.30.0.1:80"), Protocol: "tcp", Hook: HookPrerouting},
			[]Outcome{outcome(0.5, VerdictAccept, "10.0.1.1:8080", true, true), outcome(0.5, VerdictAccept, "10.0.2.2:8080", true, false)}},
		{"node port", Packet{Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddrPort("192.168.0.2:30080"), Protocol: "tcp", Hook: HookPrerouting},
			[]Outcome{outcome(0.5, VerdictAccept, "10.0.1.1:8080", true, true), outcome(0.5, VerdictAccept, "10.0.2.2:8080", true, true)}},
		{"node port on loopback", Packet{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddrPort("127.0.0.1:30080"), Protocol: "tcp", Hook: HookOutput},
			[]Outcome{outcome(1, VerdictAccept, "127.0.0.1:30080", false, false)}},
		{"node to cluster IP", Packet{Src: nodeIP, Dst: netip.MustParseAddrPort("172.30.0.1:80"), Protocol: "tcp", Hook: HookOutput},
			[]Outcome{outcome(0.5, VerdictAccept, "10.0.1.1:8080", true, true), outcome(0.5, VerdictAccept, "10.0.2.2:8080", true, true)}},
		{"no endpoints", Packet{Src: netip.MustParseAddr("10.0.5.5"), Dst: netip.MustParseAddrPort("172.30.0.2:53"), Protocol: "udp", Hook: HookPrerouting},
			[]Outcome{outcome(1, VerdictReject, "172.30.0.2:53", false, false)}},
		{"cluster IP, other port", Packet{Src: netip.MustParseAddr("10.0.5.5"), Dst: netip.MustParseAddrPort("172.30.0.1:81"), Protocol: "tcp", Hook: HookPrerouting},
			[]Outcome{outcome(1, VerdictReject, "172.30.0.1:81", false, false)}},
		{"cluster IP, other protocol", Packet{Src: nodeIP, Dst: netip.MustParseAddrPort("172.30.0.1:80"), Protocol: "sctp", Hook: HookOutput},
			[]Outcome{outcome(1, VerdictReject, "172.30.0.1:80", false, false)}},
		{"elsewhere", Packet{Src: netip.MustParseAddr("10.0.5.5"), Dst: netip.MustParseAddrPort("8.8.8.8:53"), Protocol: "udp", Hook: HookPrerouting},
			[]Outcome{outcome(1, VerdictAccept, "8.8.8.8:53", false, false)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.Trace(tt.pkt)
			if err != nil {
				t.Fatalf("Trace() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Outcomes, cmpopts.IgnoreFields(Outcome{}, "Path"),
				cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Trace() mismatch (-want +got):\n%s\n%s", diff, got)
			}
		})
	}
}

func TestTracePath(t *testing.T) {
	tr, err := NewTracer(testPlan(t), WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Trace(Packet{Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddrPort("192.168.0.2:30080"), Protocol: "tcp", Hook: HookPrerouting})
	if err != nil {
		t.Fatal(err)
	}
	want := " 50.00% accept 10.0.1.1:8080 dnat masquerade via nat-prerouting > services > external-a > mark-for-masquerade > service-a > endpoint-a1 > filter-forward > service-endpoints-check > cluster-ips-check > nat-postrouting > masquerading\n"
	if got := strings.SplitAfter(res.String(), "\n")[0]; got != want {
		t.Errorf("first outcome = %q, want %q", got, want)
	}
}

// TestTraceVerdicts checks jump, goto and return: a goto's chain returns
// to whoever jumped to the chain that went to it.
func TestTraceVerdicts(t *testing.T) {
	mk := func(name string, rules ...string) Chain {
		c, err := NewChain(name, rules...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	in := mk("in", "jump x", "drop")
	in.Base = &BaseChain{Type: ChainTypeFilter, Hook: HookInput}
	p := &Plan{Chains: []Chain{in,
		mk("x", "goto y", "reject"),
		mk("y", "mark set mark or 0x1", "jump z", "mark and 0x1 == 1 accept", "drop"),
		mk("z", "mark set mark xor 0x1", "return", "drop"),
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	tr, err := NewTracer(p, WithLocalAddrs([]netip.Addr{nodeIP}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Trace(Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.AddrPortFrom(nodeIP, 22), Protocol: "tcp", Hook: HookPrerouting})
	if err != nil {
		t.Fatal(err)
	}
	// y sets the mark, z clears it and returns, so y's accept does not
	// match and y falls off its end; x was entered by goto, so the walk
	// returns to "in" after "jump x" and meets its drop.
	if len(res.Outcomes) != 1 || res.Outcomes[0].Verdict != VerdictDrop {
		t.Errorf("Trace() = %s, want one drop", res)
	}
}

func TestTraceErrors(t *testing.T) {
	loop := func() *Plan {
		a, _ := NewChain("a", "jump b")
		b, _ := NewChain("b", "jump a")
		in, _ := NewChain("in", "jump a")
		in.Base = &BaseChain{Type: ChainTypeFilter, Hook: HookForward}
		return &Plan{Chains: []Chain{in, a, b}}
	}
	missing := func() *Plan {
		in, _ := NewChain("in", "ip daddr @nope drop")
		in.Base = &BaseChain{Type: ChainTypeFilter, Hook: HookForward}
		return &Plan{Chains: []Chain{in}}
	}
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddrPort("10.0.0.2:80")
	tests := []struct {
		name    string
		p       *Plan
		pkt     Packet
		wantErr error
	}{
		{"ipv6 packet", testPlan(t), Packet{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddrPort("[fd00::2]:80"), Protocol: "tcp", Hook: HookPrerouting}, ErrWrongFamily},
		{"hook", testPlan(t), Packet{Src: src, Dst: dst, Protocol: "tcp", Hook: HookForward}, ErrSyntax},
		{"protocol", testPlan(t), Packet{Src: src, Dst: dst, Protocol: "icmp", Hook: HookPrerouting}, ErrSyntax},
		{"no source", testPlan(t), Packet{Dst: dst, Protocol: "tcp", Hook: HookPrerouting}, ErrSyntax},
		{"loop", loop(), Packet{Src: src, Dst: dst, Protocol: "tcp", Hook: HookPrerouting}, ErrLoop},
		{"missing set", missing(), Packet{Src: src, Dst: dst, Protocol: "tcp", Hook: HookPrerouting}, ErrMissingSet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTracer(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Trace(tt.pkt); !errors.Is(err, tt.wantErr) {
				t.Errorf("Trace() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewTracerRefusesBadRule(t *testing.T) {
	p := testPlan(t)
	setRule(t, p, "services", "frobnicate")
	var e *Error
	if _, err := NewTracer(p); !errors.As(err, &e) || e.Op != "trace" || e.Chain != "services" || e.Rule != 1 {
		t.Errorf("NewTracer() error = %v, want a trace error naming services rule 1", err)
	}
}
